package admin

import (
	"errors"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// route is one entry of the single authorisation table for UI and API.
type route struct {
	method, path string
	perm         auth.Permission // required unless public
	public       bool            // no login (claim, login)
	restrictedOK bool            // usable by a session that must enrol 2FA or change its password
	owner        bool            // a mailbox owner's route (owner.go): the owner session only, never an admin's
	h            func(http.ResponseWriter, *http.Request, auth.Principal) error
	summary      string // for the OpenAPI document
	req          any    // request body type, for the OpenAPI document
}

func (s *Server) routeTable() []route {
	return []route{
		// UI pages.
		{method: "GET", path: "/claim", public: true, h: s.page("claim", nil)},
		{method: "GET", path: "/login", public: true, h: s.page("login", nil)},
		{method: "GET", path: "/{$}", perm: auth.PermStatusRead, h: s.page("dashboard", s.dashData)},
		{method: "GET", path: "/account", perm: auth.PermStatusRead, restrictedOK: true, h: s.page("account", s.accountData)},
		{method: "GET", path: "/users", perm: auth.PermUsersRead, h: s.page("users", s.usersData)},
		{method: "GET", path: "/security", perm: auth.PermSecurityRead, h: s.page("security", s.securityPageData)},
		{method: "GET", path: "/audit", perm: auth.PermAuditRead, h: s.page("audit", s.auditData)},
		{method: "GET", path: "/certificates", perm: auth.PermSecurityRead, h: s.page("certificates", s.certPageData)},
		{method: "GET", path: "/extensions", perm: auth.PermTelephonyRead, h: s.page("extensions", s.extensionsData)},
		{method: "GET", path: "/telephony", perm: auth.PermTelephonyRead, h: s.page("telephony", s.telephonyData)},
		{method: "GET", path: "/phones", perm: auth.PermTelephonyRead, h: s.page("phones", s.phonesData)},
		{method: "GET", path: "/phones/{mac}/card", perm: auth.PermTelephonyWrite, h: s.page("phonecard", s.phoneCardData)},
		{method: "GET", path: "/calls", perm: auth.PermTelephonyRead, h: s.callsPage()},
		{method: "GET", path: "/firewall", perm: auth.PermSecurityRead, h: s.page("firewall", s.firewallData)},
		{method: "GET", path: "/recordings", perm: auth.PermTelephonyRead, h: s.recordingsPage()},
		{method: "GET", path: "/intrusion", perm: auth.PermSecurityRead, h: s.page("intrusion", s.reportPageData)},
		{method: "GET", path: "/system", perm: auth.PermSystemWrite, h: s.page("system", s.systemData)},
		{method: "GET", path: "/conference", perm: auth.PermTelephonyRead, h: s.page("conference", s.conferenceData)},
		{method: "GET", path: "/privacy", perm: auth.PermSecurityRead, h: s.page("privacy", s.privacyData)},
		{method: "GET", path: "/voicemail", perm: auth.PermTelephonyRead, h: s.page("voicemail", s.voicemailData)},

		// JSON API.
		{method: "POST", path: "/api/v1/claim", summary: "Claim an unclaimed box with the console setup code and create the first admin", req: ClaimRequest{}, public: true, h: s.apiClaim},
		{method: "POST", path: "/api/v1/login", summary: "Log in with user name and password; answers a session cookie or a TOTP challenge", req: LoginRequest{}, public: true, h: s.apiLogin},
		{method: "POST", path: "/api/v1/recover", summary: "Clear an account's lockout with the setup code shown on the console (rate-limited like claiming, audited); the caller's network is trusted for that account from then on", req: RecoverRequest{}, public: true, h: s.apiRecover},
		{method: "POST", path: "/api/v1/login/totp", summary: "Complete a login with a TOTP or recovery code", req: TOTPLoginRequest{}, public: true, h: s.apiLoginTOTP},
		{method: "POST", path: "/api/v1/logout", summary: "End the current session", perm: auth.PermStatusRead, restrictedOK: true, h: s.apiLogout},
		{method: "GET", path: "/api/v1/me", summary: "The caller's account and principal", perm: auth.PermStatusRead, restrictedOK: true, h: s.apiMe},
		{method: "POST", path: "/api/v1/me/password", summary: "Change the caller's password; needs the current password and current second factor (lockout as for logins); other sessions are revoked", req: PasswordRequest{}, perm: auth.PermSelf, restrictedOK: true, h: s.apiPassword},
		{method: "POST", path: "/api/v1/me/totp", summary: "Start TOTP enrolment or replacement (needs the current password and current second factor): secret, otpauth URL and QR PNG (base64)", req: auth.Proof{}, perm: auth.PermSelf, restrictedOK: true, h: s.apiTOTPBegin},
		{method: "POST", path: "/api/v1/me/totp/confirm", summary: "Confirm TOTP enrolment with a code; returns recovery codes once", req: CodeRequest{}, perm: auth.PermSelf, restrictedOK: true, h: s.apiTOTPConfirm},
		{method: "POST", path: "/api/v1/me/totp/recovery", summary: "Replace the caller's recovery codes (needs the current password and second factor); returns the new ones once", req: auth.Proof{}, perm: auth.PermSelf, h: s.apiRecoveryCodes},
		{method: "GET", path: "/api/v1/me/sessions", summary: "The caller's sessions", perm: auth.PermSelf, h: s.apiMySessions},
		{method: "DELETE", path: "/api/v1/me/sessions/{id}", summary: "Revoke one of the caller's sessions", perm: auth.PermSelf, h: s.apiRevokeMySession},
		{method: "GET", path: "/api/v1/me/tokens", summary: "The caller's API tokens", perm: auth.PermSelf, h: s.apiMyTokens},
		{method: "POST", path: "/api/v1/me/tokens", summary: "Create an API token (needs the current password and second factor; secret shown once; default 30 days)", req: TokenRequest{}, perm: auth.PermSelf, h: s.apiCreateToken},
		{method: "DELETE", path: "/api/v1/me/tokens/{id}", summary: "Revoke one of the caller's tokens", perm: auth.PermSelf, h: s.apiRevokeMyToken},
		{method: "GET", path: "/api/v1/me/history", summary: "The caller's login history", perm: auth.PermSelf, h: s.apiMyHistory},
		{method: "GET", path: "/api/v1/status", summary: "Box status", perm: auth.PermStatusRead, h: s.apiStatus},
		{method: "GET", path: "/api/v1/accounts", summary: "List accounts", perm: auth.PermUsersRead, h: s.apiAccounts},
		{method: "POST", path: "/api/v1/accounts", summary: "Create an account (needs the caller's current password and second factor)", req: AccountRequest{}, perm: auth.PermUsersWrite, h: s.apiCreateAccount},
		{method: "PUT", path: "/api/v1/accounts/{name}/role", summary: "Change an account's role (needs the caller's current password and second factor)", req: RoleRequest{}, perm: auth.PermUsersWrite, h: s.apiSetRole},
		{method: "POST", path: "/api/v1/accounts/{name}/unlock", summary: "Clear an account's lockout", perm: auth.PermUsersWrite, h: s.apiUnlock},
		{method: "POST", path: "/api/v1/accounts/{name}/totp/reset", summary: "Remove an account's second factor (needs the caller's current password and second factor)", req: auth.Proof{}, perm: auth.PermUsersWrite, h: s.apiResetTOTP},
		{method: "DELETE", path: "/api/v1/accounts/{name}", summary: "Delete an account with its sessions and tokens", perm: auth.PermUsersWrite, h: s.apiDeleteAccount},
		{method: "GET", path: "/api/v1/sessions", summary: "All live sessions", perm: auth.PermUsersRead, h: s.apiAllSessions},
		{method: "DELETE", path: "/api/v1/sessions/{id}", summary: "Revoke any session", perm: auth.PermUsersWrite, h: s.apiRevokeSession},
		{method: "GET", path: "/api/v1/tokens", summary: "All API tokens", perm: auth.PermUsersRead, h: s.apiAllTokens},
		{method: "DELETE", path: "/api/v1/tokens/{id}", summary: "Revoke any API token", perm: auth.PermUsersWrite, h: s.apiRevokeToken},
		{method: "GET", path: "/api/v1/history", summary: "Login history of all accounts (?username=)", perm: auth.PermUsersRead, h: s.apiAllHistory},
		{method: "GET", path: "/api/v1/security/policy", summary: "The account security policy", perm: auth.PermSecurityRead, h: s.apiPolicy},
		{method: "PUT", path: "/api/v1/security/policy", summary: "Replace the account security policy", req: auth.Policy{}, perm: auth.PermSecurityWrite, h: s.apiSetPolicy},
		{method: "GET", path: "/api/v1/security/origins", summary: "Allowed integration origins", perm: auth.PermSecurityRead, h: s.apiOrigins},
		{method: "PUT", path: "/api/v1/security/origins", summary: "Replace the allowed integration origins", req: OriginsRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetOrigins},
		{method: "GET", path: "/api/v1/security/geoip", summary: "The GeoIP country database in use for new-location step-up, if any", perm: auth.PermSecurityRead, h: s.apiGeoIP},
		{method: "PUT", path: "/api/v1/security/geoip", summary: "Replace the GeoIP country database: DB-IP country CSV (.csv or .csv.gz) or GeoLite2-Country-CSV zip, as the body or a multipart part named file", perm: auth.PermSecurityWrite, h: s.apiSetGeoIP},
		{method: "DELETE", path: "/api/v1/security/geoip", summary: "Remove the GeoIP country database", perm: auth.PermSecurityWrite, h: s.apiDeleteGeoIP},
		{method: "GET", path: "/api/v1/security/report", summary: "Intrusion report per UTC day: bans by reason, throttles, auth failures, scanner drops and User-Agents, top offending sources (country with GeoIP) and countries, attacked extensions, admin-port attacks, call fraud events. Query from and to (YYYY-MM-DD, inclusive; default the last 7 days; at most 92 days; 400 names the parameter)", perm: auth.PermSecurityRead, h: s.apiReport},
		{method: "GET", path: "/api/v1/security/report/settings", summary: "Intrusion report settings: daily summary by remote syslog", perm: auth.PermSecurityRead, h: s.apiReportSettings},
		{method: "PUT", path: "/api/v1/security/report/settings", summary: "Turn the daily intrusion summary (one RFC 5424 message per day to the remote syslog collector) on or off; audited", req: ReportSettingsRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetReportSettings},
		{method: "GET", path: "/api/v1/security/syslog", summary: "Remote syslog settings (collector, transport, CA, facility) and the sender's state (connected, sent, confirmed, dropped, queued, disk queue bytes, last error)", perm: auth.PermSecurityRead, h: s.apiSyslog},
		{method: "PUT", path: "/api/v1/security/syslog", summary: "Replace the remote syslog settings; validated (400), audited, applied to the running sender at once; tcp and udp send in clear text", req: SyslogRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetSyslog},
		{method: "POST", path: "/api/v1/security/syslog/test", summary: "Send a test message to the saved collector over a new connection; answers ok or the error (TLS verification included)", perm: auth.PermSecurityWrite, h: s.apiTestSyslog},
		{method: "GET", path: "/api/v1/security/metrics", summary: "Who may scrape /metrics: the allowed source networks (empty, the default: nobody) besides an API token with the metrics scope", perm: auth.PermSecurityRead, h: s.apiMetrics},
		{method: "PUT", path: "/api/v1/security/metrics", summary: "Replace the networks allowed to scrape /metrics (at most 64; no /0; an empty list turns metrics off); validated (400), audited, applied at once", req: MetricsRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetMetrics},
		{method: "GET", path: "/api/v1/audit", summary: "Audit entries (?actor=&action=&source=&outcome=&since=&until=&limit=)", perm: auth.PermAuditRead, h: s.apiAudit},
		{method: "GET", path: "/api/v1/audit/export", summary: "Export the audit log (?format=jsonl|csv and the same filters)", perm: auth.PermAuditRead, h: s.apiAuditExport},
		{method: "GET", path: "/api/v1/openapi.json", perm: auth.PermStatusRead, h: s.apiOpenAPI, summary: "This document"},
		{method: "GET", path: "/api/v1/audit/verify", summary: "Verify the whole audit hash chain now (the dashboard checks only new entries)", perm: auth.PermAuditRead, h: s.apiAuditVerify},
		{method: "GET", path: "/api/v1/audit/head", summary: "The audit chain head (sequence number and hash) to keep off the box as an anchor", perm: auth.PermAuditRead, h: s.apiAuditHead},
		{method: "GET", path: "/api/v1/certificates", summary: "Active and self-signed certificates, TLS versions, key log state", perm: auth.PermSecurityRead, h: s.apiCertificates},
		{method: "POST", path: "/api/v1/certificates", summary: "Upload a PEM chain and key; validated (key matches, chain, dates, names), then served as pending: reverted after 120 s unless confirmed (answer closes the connection)", req: CertificateRequest{}, perm: auth.PermSecurityWrite, h: s.apiUploadCertificate},
		{method: "POST", path: "/api/v1/certificates/rollback", summary: "Serve the previous (or self-signed) certificate again", perm: auth.PermSecurityWrite, h: s.apiRollbackCertificate},
		{method: "GET", path: "/api/v1/certificates/acme", summary: "ACME settings (enabled, directory, contact, public names, challenge) and the outcome of the last attempts", perm: auth.PermSecurityRead, h: s.apiACME},
		{method: "PUT", path: "/api/v1/certificates/acme", summary: "Replace the ACME settings; validated (400); the issuance loop looks at them at once (tls-alpn-01 on this HTTPS port by default)", req: ACMERequest{}, perm: auth.PermSecurityWrite, h: s.apiSetACME},
		{method: "POST", path: "/api/v1/certificates/acme/renew", summary: "Renew the ACME certificate now, even if not due (202; the result shows in GET /api/v1/certificates/acme)", perm: auth.PermSecurityWrite, h: s.apiRenewACME},
		{method: "POST", path: "/api/v1/certificates/confirm", summary: "Keep a pending certificate or TLS change; must arrive within 120 s on a connection opened after it (with the new settings)", req: ConfirmRequest{}, perm: auth.PermSecurityWrite, h: s.apiConfirmTLSChange},
		{method: "POST", path: "/api/v1/certificates/revert", summary: "Revert a pending certificate or TLS change now", perm: auth.PermSecurityWrite, h: s.apiRevertTLSChange},
		{method: "PUT", path: "/api/v1/certificates/tls", summary: "Set the admin HTTPS TLS versions (1.2 or 1.3; default 1.2 to 1.3); applied as pending, reverted after 120 s unless confirmed (answer closes the connection)", req: TLSSettings{}, perm: auth.PermSecurityWrite, h: s.apiSetTLS},
		{method: "POST", path: "/api/v1/certificates/keylog", summary: "Turn on the TLS key log for 1 to 1440 minutes (in memory; erased when it expires)", req: KeyLogRequest{}, perm: auth.PermSecurityWrite, h: s.apiKeyLogOn},
		{method: "DELETE", path: "/api/v1/certificates/keylog", summary: "Turn off and erase the TLS key log", perm: auth.PermSecurityWrite, h: s.apiKeyLogOff},
		{method: "GET", path: "/api/v1/certificates/keylog", summary: "Download the TLS key log (NSS key log format)", perm: auth.PermSecurityWrite, h: s.apiKeyLogDownload},
		{method: "GET", path: "/api/v1/extensions", summary: "SIP extensions", perm: auth.PermTelephonyRead, h: s.apiExtensions},
		{method: "POST", path: "/api/v1/extensions", summary: "Create a SIP extension; its generated password is in the answer, once", req: ExtensionRequest{}, perm: auth.PermTelephonyWrite, h: s.apiCreateExtension},
		{method: "POST", path: "/api/v1/extensions/{name}/password", summary: "Generate a new password for an extension (shown once)", perm: auth.PermTelephonyWrite, h: s.apiExtensionPassword},
		{method: "GET", path: "/api/v1/extensions/{name}/connect", summary: "Connect a phone: the box's names and addresses, SIP ports in force, user, auth ID, realm, TLS certificate fingerprint, live registrations and the QR text (a provisioning link when a phone with this extension can enrol, else a sip: URI); never the password", perm: auth.PermTelephonyRead, h: s.apiExtensionConnect},
		{method: "GET", path: "/api/v1/extensions/{name}/qr.svg", summary: "QR code (SVG) of the connect card's QR text", perm: auth.PermTelephonyRead, h: s.apiExtensionQR},
		{method: "GET", path: "/api/v1/registrations", summary: "Every extension and its live registrations (contact, source address, transport, User-Agent, expiry)", perm: auth.PermTelephonyRead, h: s.apiRegistrations},
		{method: "GET", path: "/api/v1/calls/live", summary: "Calls in progress: who, since when, answered when, codec, SRTP per leg, MOS so far", perm: auth.PermTelephonyRead, h: s.apiLiveCalls},
		{method: "POST", path: "/api/v1/calls/{id}/hangup", summary: "Hang up a call in progress (BYE to both sides, or CANCEL while it rings); audited", perm: auth.PermTelephonyWrite, h: s.apiHangup},
		{method: "GET", path: "/api/v1/queues", summary: "Call queues now and since the daemon started: callers waiting (seconds each), offered/answered/abandoned/timed out/refused, average and longest wait, talk time; per agent: logged in, state (available, ringing, talking, wrap-up, dnd, logged-out), offered/answered/missed, talk time, last call", perm: auth.PermTelephonyRead, h: s.apiQueues},
		{method: "PUT", path: "/api/v1/queues/{id}/agents/{name}", summary: "Log a dynamic agent (extension {name}) in to or out of queue {id} (phones: *45<queue>, *46<queue>); static agents are always in (409); audited", req: QueueAgentRequest{}, perm: auth.PermTelephonyWrite, h: s.apiQueueAgent},
		{method: "POST", path: "/api/v1/telephony/trunks/{name}/test", summary: "Test a trunk: resolve its host, send one OPTIONS from the box, report its registration and whether the firewall lets its addresses in; the answer in words (audited)", perm: auth.PermTelephonyWrite, h: s.apiTrunkTest},
		{method: "DELETE", path: "/api/v1/extensions/{name}", summary: "Delete a SIP extension", perm: auth.PermTelephonyWrite, h: s.apiDeleteExtension},
		{method: "GET", path: "/api/v1/features/codes", summary: "The feature-code table phones dial (*72 forward, *78 do not disturb …): code, action and what it does", perm: auth.PermTelephonyRead, h: s.apiFeatureCodes},
		{method: "GET", path: "/api/v1/features/codes.txt", summary: "The feature-code table as plain text, to print for users", perm: auth.PermTelephonyRead, h: s.apiFeatureCodesText},
		{method: "GET", path: "/api/v1/extensions/{name}/features", summary: "An extension's forwarding (always, busy, no answer with ring time, unreachable), do-not-disturb and follow-me", perm: auth.PermTelephonyRead, h: s.apiExtensionFeatures},
		{method: "PUT", path: "/api/v1/extensions/{name}/features", summary: "Replace an extension's forwarding, do-not-disturb and follow-me; a destination the extension's class of service does not allow is refused now (403), a malformed one 422; audited", req: FeatureSettingsRequest{}, perm: auth.PermTelephonyWrite, h: s.apiSetExtensionFeatures},
		{method: "GET", path: "/api/v1/telephony", summary: "The dial plan configuration: country, emergency numbers, classes of service and limits per extension, trunks (passwords never returned), routes, DIDs, version", perm: auth.PermTelephonyRead, h: s.apiTelephony},
		{method: "PUT", path: "/api/v1/telephony", summary: "Replace the dial plan configuration; version must be the one in force (409 otherwise); validated (422) before it applies to the next call", req: TelephonyRequest{}, perm: auth.PermTelephonyWrite, h: s.apiSetTelephony},
		{method: "GET", path: "/api/v1/cdr", summary: "Call records, newest first (?since=&until= RFC 3339 or YYYY-MM-DD, party=, trunk=, result=, direction=, limit=1..1000, cursor= from next)", perm: auth.PermTelephonyRead, h: s.apiCDR},
		{method: "GET", path: "/api/v1/cdr/export", summary: "Export call records (?format=csv|jsonl and the same filters; at most 200000, newest first; audited)", perm: auth.PermTelephonyRead, h: s.apiCDRExport},
		{method: "GET", path: "/api/v1/cdr/retention", summary: "How many days call records are kept (0: until deleted)", perm: auth.PermTelephonyRead, h: s.apiCDRRetention},
		{method: "PUT", path: "/api/v1/cdr/retention", summary: "Set how many days call records are kept (0..3650, 0: until deleted); older records are deleted within the hour", req: RetentionRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetCDRRetention},
		{method: "GET", path: "/api/v1/trunks/status", summary: "Each trunk's live state: registration (registered, failed, last error, expiry) or identification by address", perm: auth.PermTelephonyRead, h: s.apiTrunkStatus},
		{method: "GET", path: "/api/v1/sip/settings", summary: "The SIP edge settings (scanner User-Agents, flood and brute-force thresholds, allowed zones, TLS versions, expiry bounds), their version and the version the running edge uses", perm: auth.PermSecurityRead, h: s.apiSIPSettings},
		{method: "PUT", path: "/api/v1/sip/settings", summary: "Replace the SIP edge settings; version must be the saved one (409 otherwise); validated (422); applied to the running SIP edge and then stored (a version the edge refuses is not stored: 422); restart_fields names the few settings that take effect only after a restart", req: SIPSettingsRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetSIPSettings},
		{method: "GET", path: "/api/v1/firewall", summary: "Firewall bans and counters (from PID 1)", perm: auth.PermSecurityRead, h: s.apiFirewall},
		{method: "GET", path: "/api/v1/firewall/policy", summary: "Firewall zones and rules (service → zones): confirmed, pending change and seconds before it reverts", perm: auth.PermSecurityRead, h: s.apiFirewallPolicy},
		{method: "PUT", path: "/api/v1/firewall/policy", summary: "Replace the firewall zones and rules; applied at once as pending, reverted unless confirmed in time (answer closes the connection)", req: PolicyRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetFirewallPolicy},
		{method: "POST", path: "/api/v1/firewall/policy/confirm", summary: "Confirm a pending firewall change; must arrive on a connection opened after the change", req: ConfirmRequest{}, perm: auth.PermSecurityWrite, h: s.apiConfirmFirewallPolicy},
		{method: "POST", path: "/api/v1/firewall/unban", summary: "Lift a firewall ban (and the SIP edge's own copy of it); audited", req: UnbanRequest{}, perm: auth.PermSecurityWrite, h: s.apiUnban},
		{method: "GET", path: "/api/v1/phones", summary: "Phones: records, the unknown MACs that asked, provisioning URLs, DHCP guidance, settings, firmware", perm: auth.PermTelephonyRead, h: s.apiPhones},
		{method: "POST", path: "/api/v1/phones", summary: "Add a phone by MAC (Linphone: no MAC, one is generated); approve opens its enrolment window. Refused while the licence is degraded", req: provision.AddRequest{}, perm: auth.PermTelephonyWrite, h: s.apiAddPhone},
		{method: "GET", path: "/api/v1/phones/fetches", summary: "The last provisioning requests (MAC, source, file, result, proof)", perm: auth.PermTelephonyRead, h: s.apiPhoneFetches},
		{method: "GET", path: "/api/v1/phones/zerotouch", summary: "The built-in DHCP server (state, leases, counters) and the SIP PnP responder's counters", perm: auth.PermTelephonyRead, h: s.apiPhoneZeroTouch},
		{method: "GET", path: "/api/v1/phones/settings", summary: "Provisioning settings (enrolment window, transport, time, language, codecs, the optional DHCP server)", perm: auth.PermTelephonyRead, h: s.apiPhoneSettings},
		{method: "PUT", path: "/api/v1/phones/settings", summary: "Change provisioning settings", req: provision.Settings{}, perm: auth.PermTelephonyWrite, h: s.apiSetPhoneSettings},
		{method: "PUT", path: "/api/v1/phones/settings/dhcp", summary: "Change only the built-in DHCP server's settings (the other provisioning settings are kept); refusals name dhcp.<field>", req: provision.DHCPSettings{}, perm: auth.PermTelephonyWrite, h: s.apiSetPhoneDHCP},
		{method: "PUT", path: "/api/v1/phones/vendor-ca", summary: "Store a vendor's factory CA (PEM) for phones' client certificates; empty removes it", req: VendorCARequest{}, perm: auth.PermSecurityWrite, h: s.apiSetVendorCA},
		{method: "GET", path: "/api/v1/phones/firmware", summary: "Uploaded phone firmware files", perm: auth.PermTelephonyRead, h: s.apiFirmwareList},
		{method: "POST", path: "/api/v1/phones/firmware", summary: "Upload a phone firmware file (application/octet-stream body, streamed to disk; query name, vendor, models, version)", perm: auth.PermTelephonyWrite, h: s.apiUploadFirmware},
		{method: "DELETE", path: "/api/v1/phones/firmware/{id}", summary: "Delete a phone firmware file", perm: auth.PermTelephonyWrite, h: s.apiDeleteFirmware},
		{method: "GET", path: "/api/v1/phones/{mac}", summary: "One phone", perm: auth.PermTelephonyRead, h: s.apiPhone},
		{method: "DELETE", path: "/api/v1/phones/{mac}", summary: "Forget a phone (not while approved: revoke first)", perm: auth.PermTelephonyWrite, h: s.apiDeletePhone},
		{method: "POST", path: "/api/v1/phones/{mac}/approve", summary: "Approve a phone: new SIP passwords for its extensions, a new one-time token, enrolment window opens", perm: auth.PermTelephonyWrite, h: s.apiPhoneApprove},
		{method: "POST", path: "/api/v1/phones/{mac}/reprovision", summary: "Re-provision: new credential, token and SIP passwords; the window opens again", perm: auth.PermTelephonyWrite, h: s.apiPhoneReprovision},
		{method: "POST", path: "/api/v1/phones/{mac}/revoke", summary: "Revoke a phone: never served again, its extensions' SIP passwords rotated", perm: auth.PermTelephonyWrite, h: s.apiPhoneRevoke},
		{method: "PUT", path: "/api/v1/phones/{mac}/extensions", summary: "Assign extensions to a phone (new passwords at its next re-provision)", req: PhoneExtensionsRequest{}, perm: auth.PermTelephonyWrite, h: s.apiPhoneExtensions},
		{method: "GET", path: "/api/v1/phones/{mac}/enrolment", summary: "The phone's enrolment card data: the one-time URL while usable", perm: auth.PermTelephonyWrite, h: s.apiPhoneEnrolment},
		{method: "GET", path: "/api/v1/phones/{mac}/qr.svg", summary: "QR code (SVG) of the one-time enrolment URL", perm: auth.PermTelephonyWrite, h: s.apiPhoneQR},
		{method: "GET", path: "/api/v1/recordings", summary: "Recordings (newest first; ?category=call|voicemail, ?limit=1..1000): who, when, seconds, category, size; the quota state (used, limit, warning at 80 %, full) and retention per category", perm: auth.PermTelephonyRead, h: s.apiRecordings},
		{method: "GET", path: "/api/v1/recordings/{category}/{name}/audio", summary: "A recording decrypted as WAV (16-bit PCM) for listening, or as a download with ?download=1; every access audited before the audio leaves", perm: auth.PermTelephonyWrite, h: s.apiRecordingAudio},
		{method: "DELETE", path: "/api/v1/recordings/{category}/{name}", summary: "Delete a recording: its key salt is overwritten and synced, then the file is removed; audited", perm: auth.PermTelephonyWrite, h: s.apiDeleteRecording},
		{method: "GET", path: "/api/v1/recordings/policy", summary: "Call recording policy: never / on-demand / always per extension, trunk and outbound route prefix (precedence never > on-demand > always), retention days per category", perm: auth.PermTelephonyRead, h: s.apiRecordingPolicy},
		{method: "PUT", path: "/api/v1/recordings/retention", summary: "Retention days per recording category ({\"call\": 90, \"voicemail\": 183}, 1..3650; others 183); the rest of the policy is kept; audited", req: RecordingRetention{}, perm: auth.PermTelephonyWrite, h: s.apiSetRetention},
		{method: "PUT", path: "/api/v1/recordings/policy", summary: "Replace the call recording policy, retention per category (1..3650 days) and whether both parties hear the recording notice when a recording starts (announce); audited", req: callrec.Policy{}, perm: auth.PermTelephonyWrite, h: s.apiSetRecordingPolicy},
		{method: "GET", path: "/api/v1/voicemail/{ext}", summary: "An extension's mailbox: PIN set or not (never the PIN), lockout, options, greetings, messages (caller, time, duration, new/old)", perm: auth.PermTelephonyRead, h: s.apiMailbox},
		{method: "GET", path: "/api/v1/voicemail/{ext}/messages/{id}/audio", summary: "A voicemail message decrypted as WAV (16-bit PCM) for listening, or as a download with ?download=1; every access audited", perm: auth.PermTelephonyWrite, h: s.apiMessageAudio},
		{method: "DELETE", path: "/api/v1/voicemail/{ext}/messages/{id}", summary: "Delete a voicemail message (record and encrypted file); audited", perm: auth.PermTelephonyWrite, h: s.apiDeleteMessage},
		{method: "POST", path: "/api/v1/voicemail/{ext}/pin", summary: "Set a new random mailbox PIN, shown once in the answer (only its argon2id hash is stored), and lift a lockout; audited", perm: auth.PermTelephonyWrite, h: s.apiMailboxPIN},
		{method: "POST", path: "/api/v1/voicemail/{ext}/unlock", summary: "Lift a mailbox lockout after wrong PINs (the SIP guard's throttles: POST /api/v1/sip/blocks/lift); audited", perm: auth.PermTelephonyWrite, h: s.apiMailboxUnlock},
		{method: "PUT", path: "/api/v1/voicemail/{ext}/greetings/{name}", summary: "Replace a mailbox greeting (unavailable, busy or name) with an uploaded WAV (audio/wav body, at most 12 MiB and 60 s, 10 s for the name); refused with the reason; stored encrypted; audited", perm: auth.PermTelephonyWrite, h: s.apiPutGreeting},
		{method: "DELETE", path: "/api/v1/voicemail/{ext}/greetings/{name}", summary: "Remove a mailbox greeting (callers hear the default prompt, with the name greeting if set); audited", perm: auth.PermTelephonyWrite, h: s.apiDeleteGreeting},
		{method: "PUT", path: "/api/v1/voicemail/{ext}/options", summary: "Mailbox options: the owner's own phone skips the PIN, voicemail to e-mail address, audio attached or only a notice; audited", req: voicemail.Options{}, perm: auth.PermTelephonyWrite, h: s.apiMailboxOptions},
		{method: "GET", path: "/api/v1/conference/rooms", summary: "Conference rooms with their settings (whether PINs are set, never the PINs) and live participants", perm: auth.PermTelephonyRead, h: s.apiRooms},
		{method: "GET", path: "/api/v1/conference/rooms/{number}", summary: "One conference room and its live participants", perm: auth.PermTelephonyRead, h: s.apiRoom},
		{method: "PUT", path: "/api/v1/conference/rooms/{number}", summary: "Create or change a conference room (2-8 digits, not an extension): PIN and moderator PIN (omitted: kept, empty: removed; voicemail's policy; stored as argon2id), max participants, wait for the moderator, join/leave tones, wideband mix; audited", req: conference.RoomRequest{}, perm: auth.PermTelephonyWrite, h: s.apiPutRoom},
		{method: "DELETE", path: "/api/v1/conference/rooms/{number}", summary: "Delete a conference room (its callers are hung up); audited", perm: auth.PermTelephonyWrite, h: s.apiDeleteRoom},
		{method: "POST", path: "/api/v1/conference/rooms/{number}/participants/{id}/kick", summary: "Hang up one participant of a live room; audited", perm: auth.PermTelephonyWrite, h: s.apiKick},
		{method: "GET", path: "/api/v1/moh", summary: "Music-on-hold classes: the generated default and the uploaded ones (duration, size)", perm: auth.PermTelephonyRead, h: s.apiMusicClasses},
		{method: "PUT", path: "/api/v1/moh/{class}", summary: "Upload a WAV file (audio/wav body, at most 16 MiB and 5 min; PCM 8/16-bit, A-law or µ-law, 8-48 kHz) as a music-on-hold class, converted to 16 kHz mono; a refused file changes nothing; audited", perm: auth.PermTelephonyWrite, h: s.apiPutMusic},
		{method: "DELETE", path: "/api/v1/moh/{class}", summary: "Delete an uploaded music-on-hold class (default: back to the generated music); audited", perm: auth.PermTelephonyWrite, h: s.apiDeleteMusic},
		{method: "GET", path: "/api/v1/mail", summary: "The outgoing mail server for voicemail to e-mail (never the password) and its queue's counters", perm: auth.PermSystemWrite, h: s.apiMail},
		{method: "PUT", path: "/api/v1/mail", summary: "Set the outgoing mail server: SMTP submission with implicit TLS (465) or required STARTTLS (587), certificate checked against the system roots or a pinned CA, AUTH only inside TLS; stored sealed; an empty password keeps the stored one; audited", req: MailRequest{}, perm: auth.PermSystemWrite, h: s.apiSetMail},
		{method: "DELETE", path: "/api/v1/mail", summary: "Remove the mail server settings (voicemail is no longer mailed; messages stay in the mailboxes); audited", perm: auth.PermSystemWrite, h: s.apiClearMail},
		{method: "POST", path: "/api/v1/mail/test", summary: "Send a test message now (at most one a minute); the answer says in words whether the server took it; audited", req: MailTestRequest{}, perm: auth.PermSystemWrite, h: s.apiMailTest},
		{method: "GET", path: "/api/v1/prompts", summary: "The prompt catalogue for a language (?lang=, default en): what each prompt says, its default, whether an upload replaces it", perm: auth.PermTelephonyRead, h: s.apiPrompts},
		{method: "PUT", path: "/api/v1/prompts/{lang}/{name}", summary: "Replace a prompt of a language with a WAV file (the body, or a multipart part named file; at most 32 MiB and the prompt's length limit; parsed strictly and converted to 16 kHz mono); audited", perm: auth.PermTelephonyWrite, h: s.apiPutPrompt},
		{method: "DELETE", path: "/api/v1/prompts/{lang}/{name}", summary: "Remove an uploaded prompt: the default plays again; audited", perm: auth.PermTelephonyWrite, h: s.apiDeletePrompt},
		{method: "GET", path: "/api/v1/sip/blocks", summary: "The SIP edge's live bans (a source cut off) and throttles (a source that may no longer try one extension), with the extensions registered inside each ban", perm: auth.PermSecurityRead, h: s.apiSIPBlocks},
		{method: "POST", path: "/api/v1/sip/blocks/lift", summary: "Lift the SIP edge's bans and throttles of a source (address or prefix), or only one extension's throttle there; audited. Firewall bans: POST /api/v1/firewall/unban", req: LiftRequest{}, perm: auth.PermSecurityWrite, h: s.apiSIPLift},
		{method: "GET", path: "/api/v1/system/network", summary: "The box's network (from PID 1): confirmed configuration, pending change and seconds before it reverts, the board's interfaces and the live addresses", perm: auth.PermSystemWrite, h: s.apiNetwork},
		{method: "PUT", path: "/api/v1/system/network", summary: "Replace the network (addresses DHCP or static, IPv4/IPv6, VLANs, DNS, hostname); validated (422 naming the field), applied at once as pending, reverted unless confirmed within 120 s (answer closes the connection)", req: NetworkRequest{}, perm: auth.PermSystemWrite, h: s.apiSetNetwork},
		{method: "POST", path: "/api/v1/system/network/confirm", summary: "Confirm a pending network change; must arrive on a connection opened after the change", req: ConfirmRequest{}, perm: auth.PermSystemWrite, h: s.apiConfirmNetwork},
		{method: "GET", path: "/api/v1/system/time", summary: "NTP servers, time zone, last synchronisation, and the box's time now in its zone and in UTC", perm: auth.PermSystemWrite, h: s.apiTime},
		{method: "PUT", path: "/api/v1/system/time", summary: "Replace the NTP servers (at most 4, names or addresses) and the time zone (IANA name); validated (422 naming the field); audited", req: TimeRequest{}, perm: auth.PermSystemWrite, h: s.apiSetTime},
		{method: "GET", path: "/api/v1/privacy", summary: "Every data category: whether it holds personal data, its retention and anonymisation setting, its current size and last sweep; the planned categories; the store's page accounting", perm: auth.PermSecurityRead, h: s.apiPrivacy},
		{method: "PUT", path: "/api/v1/privacy/{category}", summary: "Set a category's retention days, address anonymisation (none, truncate, hash) and, for call records, number masking; audited; a change that deletes data now needs current_password (and current_code)", req: PrivacyRequest{}, perm: auth.PermSecurityWrite, h: s.apiSetPrivacy},
		{method: "POST", path: "/api/v1/privacy/subjects/find", summary: "Count what each category holds about an extension, admin user or external number", req: privacy.Subject{}, perm: auth.PermSecurityWrite, h: s.apiPrivacyFind},
		{method: "POST", path: "/api/v1/privacy/subjects/export", summary: "Subject-access export: everything held about an extension, admin user or external number, as JSON; audited (counts, not data)", req: privacy.Subject{}, perm: auth.PermSecurityWrite, h: s.apiPrivacyExport},
		{method: "POST", path: "/api/v1/privacy/subjects/forget", summary: "Delete everything held about an extension, admin user or external number (the audit log keeps its entries); needs current_password (and current_code); audited with categories and counts, not the data", req: SubjectRequest{}, perm: auth.PermSecurityWrite, h: s.apiPrivacyForget},
		{method: "GET", path: "/api/v1/connections", summary: "The connection log, newest first: admin and API logins, logouts and failures, SIP registrations (?kind= prefix, user=, source=, result=, since=, until= RFC 3339, limit=1..500, before= cursor from next)", perm: auth.PermSecurityRead, h: s.apiConnections},
		{method: "POST", path: "/api/v1/system/reboot", summary: "Reboot the box", perm: auth.PermSystemWrite, h: s.apiReboot},
		{method: "POST", path: "/api/v1/system/poweroff", summary: "Power the box off", perm: auth.PermSystemWrite, h: s.apiPoweroff},
		{method: "POST", path: "/api/v1/system/factory-reset", summary: "Factory reset: PID 1 erases the keys (crypto-erase), wipes /data and restarts the box unclaimed; needs confirm \"ERASE\", current_password and current_code; audited (and sent to remote syslog) before the erase; at most 3 requests an hour", req: FactoryResetRequest{}, perm: auth.PermSystemWrite, h: s.apiFactoryReset},
	}
}

func src(r *http.Request) string { return clientOf(r).String() }

func (s *Server) setSessionCookie(w http.ResponseWriter, ns *auth.NewSession) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: ns.Secret, Path: "/", Expires: ns.Expires,
		MaxAge: max(1, int(ns.Expires.Sub(s.clock.Now()).Seconds())), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

type loginAnswer struct {
	Status      string           `json:"status"` // "ok" | "totp_required"
	Challenge   string           `json:"challenge,omitempty"`
	CSRFToken   string           `json:"csrf_token,omitempty"`
	NewLocation bool             `json:"new_location,omitempty"`
	Restriction auth.Restriction `json:"restriction,omitempty"`
}

func (s *Server) answerLogin(w http.ResponseWriter, res auth.LoginResult) error {
	if res.Session == nil {
		writeJSON(w, http.StatusOK, loginAnswer{Status: "totp_required", Challenge: res.Challenge, NewLocation: res.NewLocation})
		return nil
	}
	s.setSessionCookie(w, res.Session)
	writeJSON(w, http.StatusOK, loginAnswer{Status: "ok", CSRFToken: res.Session.CSRF, NewLocation: res.NewLocation, Restriction: res.Restriction})
	return nil
}

// ClaimRequest is the body of POST /api/v1/claim.
type ClaimRequest struct {
	SetupCode string `json:"setup_code"`
	Username  string `json:"username"`
	Password  string `json:"password"`
}

func (s *Server) apiClaim(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req ClaimRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	res, err := s.auth.Claim(r.Context(), clientOf(r), req.SetupCode, req.Username, req.Password)
	if err != nil {
		return err
	}
	return s.answerLogin(w, res)
}

// LoginRequest is the body of POST /api/v1/login.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (s *Server) apiLogin(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req LoginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	res, err := s.auth.Login(r.Context(), clientOf(r), req.Username, req.Password)
	if err != nil {
		return err
	}
	return s.answerLogin(w, res)
}

// TOTPLoginRequest is the body of POST /api/v1/login/totp.
type TOTPLoginRequest struct {
	Challenge string `json:"challenge"`
	Code      string `json:"code"` // TOTP or recovery code
}

func (s *Server) apiLoginTOTP(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req TOTPLoginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	res, err := s.auth.LoginSecondFactor(r.Context(), clientOf(r), req.Challenge, req.Code)
	if err != nil {
		return err
	}
	return s.answerLogin(w, res)
}

func (s *Server) apiLogout(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.Logout(p, src(r)); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
	return nil
}

func (s *Server) apiMe(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	info, err := s.auth.Account(p.Username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"account": info, "principal": p})
	return nil
}

// PasswordRequest is the body of POST /api/v1/me/password.
type PasswordRequest struct {
	auth.Proof
	New string `json:"new_password"`
}

func (s *Server) apiPassword(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req PasswordRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.auth.ChangePassword(r.Context(), p, clientOf(r), req.Proof, req.New); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "password changed"})
	return nil
}

func (s *Server) apiTOTPBegin(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var pr auth.Proof
	if err := decodeJSON(r, &pr); err != nil {
		return err
	}
	e, err := s.auth.BeginTOTP(r.Context(), p, clientOf(r), pr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, e)
	return nil
}

// CodeRequest carries a one-time code.
type CodeRequest struct {
	Code string `json:"code"`
}

func (s *Server) apiTOTPConfirm(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req CodeRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	codes, err := s.auth.ConfirmTOTP(p, src(r), req.Code)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "two-factor enabled", "recovery_codes": codes})
	return nil
}

func (s *Server) apiRecoveryCodes(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var pr auth.Proof
	if err := decodeJSON(r, &pr); err != nil {
		return err
	}
	codes, err := s.auth.NewRecoveryCodes(r.Context(), p, clientOf(r), pr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "recovery codes replaced", "recovery_codes": codes})
	return nil
}

// RecoverRequest is the body of POST /api/v1/recover.
type RecoverRequest struct {
	SetupCode string `json:"setup_code"`
	Username  string `json:"username"`
}

func (s *Server) apiRecover(w http.ResponseWriter, r *http.Request, _ auth.Principal) error {
	var req RecoverRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.auth.Recover(r.Context(), clientOf(r), req.SetupCode, req.Username); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "lockout cleared; log in now"})
	return nil
}

func (s *Server) apiMySessions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	l, err := s.auth.Sessions(p.Username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": l, "current": p.SessionID})
	return nil
}

func (s *Server) apiRevokeMySession(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.RevokeSession(p, src(r), p.Username, r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *Server) apiMyTokens(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	l, err := s.auth.Tokens(p.Username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": l})
	return nil
}

// TokenRequest is the body of POST /api/v1/me/tokens.
type TokenRequest struct {
	auth.Proof
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	Days   int      `json:"days,omitempty"` // 0: policy default (30)
}

func (s *Server) apiCreateToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req TokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	secret, t, err := s.auth.CreateToken(r.Context(), p, clientOf(r), req.Proof, req.Name, req.Scopes, req.Days)
	if err != nil {
		return err
	}
	t.ID = t.ID[:8]
	writeJSON(w, http.StatusCreated, map[string]any{"token": secret, "info": t})
	return nil
}

func (s *Server) apiRevokeMyToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.RevokeToken(p, src(r), p.Username, r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *Server) apiMyHistory(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	h, err := s.auth.History(p.Username, 200)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": h})
	return nil
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	res, verr := s.audit.Verify()
	writeJSON(w, http.StatusOK, map[string]any{"time": s.clock.Now().UTC(), "audit_entries": res.Entries, "audit_ok": verr == nil,
		"items": s.dashboard(r.Context())})
	return nil
}

func (s *Server) apiAccounts(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	l, err := s.auth.Accounts()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": l})
	return nil
}

// AccountRequest is the body of POST /api/v1/accounts.
type AccountRequest struct {
	auth.Proof
	Username string    `json:"username"`
	Role     auth.Role `json:"role"`
	Password string    `json:"password"`
}

func (s *Server) apiCreateAccount(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req AccountRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.auth.CreateAccount(r.Context(), p, clientOf(r), req.Proof, req.Username, req.Role, req.Password); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": "created"})
	return nil
}

// RoleRequest is the body of PUT /api/v1/accounts/{name}/role.
type RoleRequest struct {
	auth.Proof
	Role auth.Role `json:"role"`
}

func (s *Server) apiSetRole(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req RoleRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.auth.SetRole(r.Context(), p, clientOf(r), req.Proof, r.PathValue("name"), req.Role); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "role changed"})
	return nil
}

func (s *Server) apiUnlock(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.Unlock(p, src(r), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "unlocked"})
	return nil
}

func (s *Server) apiResetTOTP(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var pr auth.Proof
	if err := decodeJSON(r, &pr); err != nil {
		return err
	}
	if err := s.auth.ResetTOTP(r.Context(), p, clientOf(r), pr, r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "two-factor removed"})
	return nil
}

func (s *Server) apiDeleteAccount(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.DeleteAccount(p, src(r), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiAllSessions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	l, err := s.auth.Sessions("")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": l})
	return nil
}

func (s *Server) apiRevokeSession(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.RevokeSession(p, src(r), "", r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *Server) apiAllTokens(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	l, err := s.auth.Tokens("")
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": l})
	return nil
}

func (s *Server) apiRevokeToken(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.auth.RevokeToken(p, src(r), "", r.PathValue("id")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "revoked"})
	return nil
}

func (s *Server) apiAllHistory(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	h, err := s.auth.History(r.URL.Query().Get("username"), 1000)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": h})
	return nil
}

func (s *Server) apiPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	pol, err := s.auth.Policy()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pol)
	return nil
}

func (s *Server) apiSetPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var pol auth.Policy
	if err := decodeJSON(r, &pol); err != nil {
		return err
	}
	if err := s.auth.SetPolicy(p, src(r), pol); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "saved"})
	return nil
}

const bSettings = "admin.settings"

// OriginsRequest is the body of PUT /api/v1/security/origins.
type OriginsRequest struct {
	Origins []string `json:"origins"`
}

func (s *Server) origins() ([]string, error) {
	var o OriginsRequest
	err := s.db.View(func(tx *store.Tx) error { _, err := tx.Get(bSettings, "origins", &o); return err })
	return o.Origins, err
}

func (s *Server) apiOrigins(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	o, err := s.origins()
	if err != nil {
		return err
	}
	if o == nil {
		o = []string{}
	}
	writeJSON(w, http.StatusOK, OriginsRequest{Origins: o})
	return nil
}

func (s *Server) apiSetOrigins(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req OriginsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Origins) > 32 {
		return errors.Join(errBadOrigin, errors.New("at most 32 origins"))
	}
	clean := []string{}
	for i, o := range req.Origins {
		n, err := normalizeOrigin(o)
		if err != nil {
			return withField("/origins/"+strconv.Itoa(i), err)
		}
		clean = append(clean, n)
	}
	return s.db.Update(func(tx *store.Tx) error {
		var old OriginsRequest
		if _, err := tx.Get(bSettings, "origins", &old); err != nil {
			return err
		}
		if err := tx.Put(bSettings, "origins", OriginsRequest{Origins: clean}); err != nil {
			return err
		}
		if err := s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: src(r), Action: "security.origins.update", Before: old, After: OriginsRequest{Origins: clean}}); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "saved"})
		return nil
	})
}

// auditFilter reads a filter from query parameters.
func auditFilter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Source: q.Get("source"), Outcome: q.Get("outcome"), Limit: 200}
	for _, v := range []string{f.Actor, f.Action, f.Source, f.Outcome} {
		if len(v) > 128 {
			return f, errors.Join(errBadRequest, errors.New("filter value too long"))
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxLimit {
			return f, errors.Join(errBadRequest, errors.New("limit must be 1..1000"))
		}
		f.Limit = n
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				if t, err = time.Parse("2006-01-02", v); err != nil {
					return f, errors.Join(errBadRequest, errors.New(name+" must be RFC 3339 or YYYY-MM-DD"))
				}
			}
			*dst = t
		}
	}
	return f, nil
}

func (s *Server) apiAudit(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	l, err := s.audit.Query(f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": l})
	return nil
}

func (s *Server) apiAuditExport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	f.Limit = 0
	if r.URL.Query().Get("limit") != "" {
		f.Limit, _ = strconv.Atoi(r.URL.Query().Get("limit"))
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = audit.FormatJSONLines
	}
	ct := map[string]string{audit.FormatJSONLines: "application/jsonl", audit.FormatCSV: "text/csv; charset=utf-8"}[format]
	if ct == "" {
		return errors.Join(audit.ErrFormat, errors.New("format must be jsonl or csv"))
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="edgepbx-audit.`+strings.TrimPrefix(format, ".")+`"`)
	if err := s.audit.Export(w, format, f); err != nil {
		s.log.Error("audit export", "err", err)
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "audit.export", Detail: format})
	return nil
}

func (s *Server) apiAuditVerify(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	res, err := s.audit.VerifyFull()
	out := map[string]any{"ok": err == nil, "entries": res.Entries, "head": res.Head}
	if err != nil {
		out["error"] = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) apiAuditHead(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	h, err := s.audit.Head()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

package auth

import "slices"

// Role is an account's role. The table below is the only place that says
// what a role may do; the admin HTTP layer asks Principal.Can for every
// route, UI and API alike.
type Role string

const (
	RoleAdmin    Role = "admin"    // everything
	RoleOperator Role = "operator" // calls, extensions; no security settings
	RoleAuditor  Role = "auditor"  // read only, including the audit log
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleOperator, RoleAuditor}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// Permission names one kind of action.
type Permission string

const (
	PermStatusRead     Permission = "status.read"     // dashboard
	PermSelf           Permission = "self"            // own password, 2FA, sessions, tokens
	PermTelephonyRead  Permission = "telephony.read"  // extensions, trunks, dial plan, calls
	PermTelephonyWrite Permission = "telephony.write" //
	PermUsersRead      Permission = "users.read"      // accounts, all sessions, login history
	PermUsersWrite     Permission = "users.write"     //
	PermSecurityRead   Permission = "security.read"   // security policy, firewall, certificates
	PermSecurityWrite  Permission = "security.write"  //
	PermAuditRead      Permission = "audit.read"      // audit log, export, verify
	PermSystemWrite    Permission = "system.write"    // reboot, power off, updates
	PermMetricsRead    Permission = "metrics.read"    // Prometheus /metrics
)

// Permissions lists every permission.
var Permissions = []Permission{PermStatusRead, PermSelf, PermTelephonyRead, PermTelephonyWrite, PermUsersRead,
	PermUsersWrite, PermSecurityRead, PermSecurityWrite, PermAuditRead, PermSystemWrite, PermMetricsRead}

var rolePerms = map[Role][]Permission{
	RoleAdmin:    Permissions,
	RoleOperator: {PermStatusRead, PermSelf, PermTelephonyRead, PermTelephonyWrite},
	RoleAuditor:  {PermStatusRead, PermSelf, PermTelephonyRead, PermUsersRead, PermSecurityRead, PermAuditRead, PermMetricsRead},
}

// RoleCan reports whether role r grants p.
func RoleCan(r Role, p Permission) bool { return slices.Contains(rolePerms[r], p) }

// API token scopes narrow what a token may do below its owner's role.
const (
	ScopeRead  = "read"  // every *.read permission
	ScopeWrite = "write" // telephony changes
	ScopeAdmin = "admin" // everything the owner's role allows
	// ScopeMetrics reads /metrics and nothing else; it is never combined
	// with another scope, so a token kept in a monitoring system's
	// configuration opens nothing else on the box.
	ScopeMetrics = "metrics"
)

// Scopes lists every token scope.
var Scopes = []string{ScopeRead, ScopeWrite, ScopeAdmin, ScopeMetrics}

var scopePerms = map[string][]Permission{
	ScopeRead:    {PermStatusRead, PermTelephonyRead, PermUsersRead, PermSecurityRead, PermAuditRead},
	ScopeWrite:   {PermStatusRead, PermTelephonyRead, PermTelephonyWrite},
	ScopeAdmin:   Permissions,
	ScopeMetrics: {PermMetricsRead},
}

// Restriction limits a session until the user fixes something.
type Restriction string

const (
	RestrictNone           Restriction = ""
	RestrictEnrollTOTP     Restriction = "enroll-totp"     // role requires 2FA, none enrolled
	RestrictChangePassword Restriction = "change-password" // password older than the maximum age
)

// Principal is who a request acts as: an account through a session or a token.
type Principal struct {
	Username    string      `json:"username"`
	Role        Role        `json:"role"`
	SessionID   string      `json:"session_id,omitempty"`
	TokenID     string      `json:"token_id,omitempty"`
	Scopes      []string    `json:"scopes,omitempty"`
	CSRF        string      `json:"-"`
	Restriction Restriction `json:"restriction,omitempty"`
}

// Can reports whether p may use permission perm. Tokens get the
// intersection of their owner's role and their scopes; tokens never manage
// their owner's credentials.
func (p Principal) Can(perm Permission) bool {
	if !RoleCan(p.Role, perm) {
		return false
	}
	if p.TokenID == "" {
		return true
	}
	if perm == PermSelf {
		return false
	}
	for _, s := range p.Scopes {
		if slices.Contains(scopePerms[s], perm) {
			return true
		}
	}
	return false
}

// Actor names the principal in the audit log.
func (p Principal) Actor() string {
	if p.TokenID != "" {
		return p.Username + " (token " + p.TokenID + ")"
	}
	return p.Username
}

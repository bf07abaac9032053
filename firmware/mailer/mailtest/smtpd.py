"""A real SMTP submission server for the mailer tests (Debian's aiosmtpd).

usage: smtpd.py MODE CERT KEY OUTDIR USER PASSWORD
MODE: starttls (STARTTLS required before anything else), tls (implicit TLS)
or plain (no TLS offered at all). AUTH (PLAIN, LOGIN) is required and only
accepted inside TLS. Every accepted message is written to OUTDIR as N.eml
with N.env (MAIL FROM and RCPT TO, one a line). The listening port is
printed on stdout as "port N" once the server accepts connections.
"""
import asyncio
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

mode, cert, key, outdir, user, password = sys.argv[1:7]


class Handler:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(outdir, str(self.n))
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".env", "w") as f:
            f.write(envelope.mail_from + "\n" + "\n".join(envelope.rcpt_tos) + "\n")
            tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
            f.write("tls=%s\n" % tls)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK stored"


def authenticator(server, session, envelope, mechanism, data):
    if isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode():
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False)


async def main():
    ctx = None
    if mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    handler = Handler()

    def factory():
        kw = dict(hostname="smtp.test", authenticator=authenticator, auth_required=True,
                  auth_require_tls=True, data_size_limit=16 << 20)
        if mode == "starttls":
            kw.update(tls_context=ctx, require_starttls=True)
        if mode == "tls":
            # Implicit TLS: the transport is already TLS; aiosmtpd only
            # needs to know AUTH is safe here.
            kw.update(auth_require_tls=False)
        return SMTP(handler, **kw)

    srv = await asyncio.get_running_loop().create_server(
        factory, host="127.0.0.1", port=0, ssl=ctx if mode == "tls" else None)
    print("port", srv.sockets[0].getsockname()[1], flush=True)
    # Ends when the test closes our stdin (or kills us).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())

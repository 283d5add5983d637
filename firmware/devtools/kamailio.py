"""Kamailio 5.6 on loopback as a registrar + proxy for the demo, benchmarks and tests.

Digest auth for REGISTER and INVITE/REFER/MESSAGE against plain-text passwords in an htable
(``add_user`` works while Kamailio runs, through kamcmd); UDP + TCP + TLS on free loopback ports;
record_route/loose_route; out-of-dialog NOTIFYs (MWI) relayed to registered users. Optional
extras: extensions answered with a 302 to another user (``redirects``) and a notifier that
receives the ``message-summary`` SUBSCRIBEs (``mwi_server``). Usage::

    with KamailioServer(directory, redirects={"1990": "1002"}) as kam:
        kam.add_user("1001", "secret")
        ... kam.host, kam.udp_port, kam.tcp_port, kam.tls_port, kam.domain

Nothing here knows about offhook's config: it is plain paths, users and ports.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from offhook.contract.logs import kv
from offhook.firmware.devtools.certs import CertificateSet, make_certificates
from offhook.firmware.processes import stop_process

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._-]+")
_SAFE_USER = re.compile(r"[A-Za-z0-9._*-]+")
_START_ATTEMPTS = 3
_READY_TIMEOUT_S = 10.0


def _binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin") or name


def _module_dir() -> str:
    """Kamailio's module directory for this architecture (Debian: /usr/lib/<triplet>/...)."""
    fixed = ["/usr/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules"]
    for candidate in [*sorted(glob.glob("/usr/lib/*/kamailio/modules")), *fixed]:
        if os.path.isfile(os.path.join(candidate, "tm.so")):
            return candidate
    raise RuntimeError("Kamailio modules not found (install the kamailio package)")


def free_port(kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A loopback port that is free for every given socket type right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            try:
                for kind in kinds[1:]:
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found in 50 tries")


def sip_options_ping(port: int, timeout: float = 0.5) -> bool:
    """True if something on UDP ``port`` answers an OPTIONS request with a SIP response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local = sock.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        request = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(request.encode(), (HOST, port))
        try:
            data, _ = sock.recvfrom(4096)
        except (TimeoutError, ConnectionRefusedError):
            return False
        return data.startswith(b"SIP/2.0 ")


_CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
tcp_accept_no_cl=yes
{tcp_globals}listen=udp:{host}:{udp}
listen=tcp:{host}:{tcp}
listen=tls:{host}:{tls}
mpath="{modules}"

loadmodule "tls.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "htable.so"
loadmodule "ctl.so"
loadmodule "auth.so"
{media_modules}{presence_modules}
modparam("tls", "config", "{tls_cfg}")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
# Kamailio builds a GRUU from the To host alone, without its port (registrar build_contact):
# on a proxy that is not on 5060 such a GRUU leads nowhere, and a client that uses it as its
# dialog Contact (linphone by default) never gets in-dialog requests. Grant none: clients
# fall back to their registered Contact.
modparam("registrar", "gruu_enabled", 0)
modparam("ctl", "binrpc", "unix:{ctl_socket}")
modparam("htable", "htable", "users=>size=6;")
modparam("tm", "fr_timer", 4000)
modparam("tm", "fr_inv_timer", 30000)
{presence_params}
event_route[htable:mod-init] {{
{user_lines}
}}

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "Keepalive");
        exit;
    }}
{presence_lines}    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                route(RELAY);
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!is_present_hf("Authorization")
                || !pv_www_authenticate("$td", "$sht(users=>$au)", "0")) {{
            www_challenge("$td", "0");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("INVITE|REFER|MESSAGE")) {{
        if (!is_present_hf("Proxy-Authorization")
                || !pv_proxy_authenticate("$fd", "$sht(users=>$au)", "0")) {{
            proxy_challenge("$fd", "0");
            exit;
        }}
        consume_credentials();
    }}
    if (is_method("MESSAGE") && $rd == "{host}" && $(ru{{uri.port}}) == "") {{
        # linphone 5.1 keys its chat rooms by identity, which drops the port: its MESSAGEs
        # come to sip:user@host without this proxy's port
        $ru = "sip:" + $rU + "@{host}:{udp}";
    }}
{redirect_lines}
{dialog_lines}
    if (is_method("INVITE|SUBSCRIBE")) {{
        record_route();
    }}
{mwi_lines}
    if (uri == myself) {{
        if (!lookup("location")) {{
            sl_send_reply("404", "Not Found");
            exit;
        }}
    }}
    route(RELAY);
}}

{presence_route}
route[RELAY] {{
{media_lines}
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
{media_reply_route}"""

# Presence for the dialog event package (RFC 4235, BLF): presence + presence_dialoginfo serve
# SUBSCRIBE/NOTIFY, dialog + pua + pua_dialoginfo PUBLISH each call's state to it (the PUBLISH
# loops back through this proxy). The presence module refuses to serve without a database, so it
# gets db_text in the instance directory, with subscriptions and publications kept in memory.
_PRESENCE_MODULES = """loadmodule "db_text.so"
loadmodule "dialog.so"
loadmodule "presence.so"
loadmodule "presence_dialoginfo.so"
loadmodule "pua.so"
loadmodule "pua_dialoginfo.so"
"""
_PRESENCE_PARAMS = """modparam("presence", "db_url", "text://{db_dir}")
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 2)
modparam("presence", "server_address", "sip:{host}:{udp}")
modparam("pua", "db_url", "text://{db_dir}")
modparam("pua", "db_mode", 0)
modparam("pua_dialoginfo", "include_callid", 1)
modparam("pua_dialoginfo", "include_tags", 1)
modparam("pua_dialoginfo", "include_localremote", 1)
modparam("pua_dialoginfo", "override_lifetime", 300)
# pjsip writes From/To without the domain's port (sip:1002@127.0.0.1 on a proxy at :5070), so
# pua_dialoginfo would take their URIs as foreign and publish nothing: publish every tracked
# dialog (flag 8) and send all PUBLISHes to this proxy itself.
modparam("pua_dialoginfo", "send_publish_flag", 8)
modparam("pua", "outbound_proxy", "sip:{host}:{udp}")
"""
# Watchers authenticate like callers; the PUBLISHes come from this proxy's own pua module.
_PRESENCE_LINES = """    if (is_method("SUBSCRIBE") && $hdr(Event) =~ "^dialog") {
        if (!is_present_hf("Proxy-Authorization")
                || !pv_proxy_authenticate("$fd", "$sht(users=>$au)", "0")) {
            proxy_challenge("$fd", "0");
            exit;
        }
        consume_credentials();
    }
    if (is_method("PUBLISH|SUBSCRIBE") && $hdr(Event) =~ "^dialog") {
        route(PRESENCE);
    }
"""
_DIALOG_LINES = """    if (is_method("INVITE")) {
        setflag(8);
        dlg_manage();
    }"""
_PRESENCE_ROUTE = """route[PRESENCE] {
    if (!t_newtran()) {
        sl_reply_error();
        exit;
    }
    if (is_method("PUBLISH")) {
        handle_publish();
    } else {
        handle_subscribe();
    }
    t_release();
    exit;
}
"""
# db_text tables the presence modules open at start (copied from Kamailio's own templates)
_PRESENCE_TABLES = ("version", "presentity", "active_watchers", "watchers", "xcap", "pua")
_DBTEXT_TEMPLATES = Path("/usr/share/kamailio/dbtext/kamailio")

# The media relay (media_relay.MediaRelay) through the rtpproxy module: rtpproxy_manage() offers
# on an INVITE, answers on its replies (and an ACK with SDP) and deletes on BYE/CANCEL.
_MEDIA_MODULES = """loadmodule "rtpproxy.so"
modparam("rtpproxy", "rtpproxy_sock", "udp:{host}:{port}")
"""
_MEDIA_LINES = """    if (is_method("INVITE|ACK|BYE|CANCEL")) {
        rtpproxy_manage();
        if (is_method("INVITE")) {
            t_on_reply("MEDIA");
        }
    }"""
_MEDIA_REPLY_ROUTE = """
onreply_route[MEDIA] {
    if (has_body("application/sdp")) {
        rtpproxy_manage();
    }
}
"""

_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}
ca_list = {ca}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


class KamailioServer:
    """A Kamailio registrar + proxy on free loopback ports, configured in its own directory."""

    def __init__(
        self,
        directory: Path,
        certificates: CertificateSet | None = None,
        *,
        redirects: dict[str, str] | None = None,
        mwi_server: tuple[str, int] | None = None,
        presence: bool = False,
        media_relay: tuple[str, int] | None = None,
        tcp_lifetime_s: int | None = None,
    ) -> None:
        """``redirects``: extension -> user its INVITEs are sent to with a 302 (Contact at this
        proxy). ``mwi_server``: (host, port) of a UDP notifier that gets every
        ``Event: message-summary`` SUBSCRIBE (record-routed); without one they go to the user.
        ``presence``: serve ``Event: dialog`` subscriptions (BLF) with every call's state.
        ``media_relay``: (host, port) of an rtpproxy-protocol relay (``media_relay.MediaRelay``)
        that every call's SDP offer and answer are rewritten to, through the rtpproxy module.
        ``tcp_lifetime_s``: close TCP and TLS connections idle this long (Kamailio's default is
        120 s), for tests of clients that must notice and connect again."""
        for extension, target in (redirects or {}).items():
            for value in (extension, target):
                if not _SAFE_USER.fullmatch(value):
                    raise ValueError(f"redirect {value!r}: use letters, digits, . _ * -")
        for name, server in (("mwi_server", mwi_server), ("media_relay", media_relay)):
            if server is not None and server[0] != HOST:
                raise ValueError(f"{name} {server[0]!r}: only {HOST} is allowed")
        self.directory = directory
        self.certificates = certificates or make_certificates(directory / "tls")
        self.redirects = dict(redirects or {})
        self.mwi_server = mwi_server
        self.media_relay = media_relay
        self.presence = presence
        self.tcp_lifetime_s = tcp_lifetime_s
        self.host = HOST
        self.udp_port = self.tcp_port = self.tls_port = 0
        self.log_path = directory / "kamailio.log"
        self._ctl_socket = directory / "ctl.sock"
        self._tls_cfg = directory / "tls.cfg"
        self._users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def domain(self) -> str:
        """The SIP domain accounts use: host:port of the UDP/TCP listener."""
        return f"{self.host}:{self.udp_port}"

    @property
    def tls_domain(self) -> str:
        return f"{self.host}:{self.tls_port}"

    def add_user(self, user: str, password: str) -> None:
        """Create or replace a subscriber; works before start() and, through RPC, while running."""
        for value in (user, password):
            if not _SAFE_CREDENTIAL.fullmatch(value):
                raise ValueError(f"user/password {value!r}: use letters, digits, . _ -")
        self._users[user] = password
        if self._process is not None:
            # "s:" keeps kamcmd from sending digit-only users as integers
            self.rpc("htable.sets", "users", f"s:{user}", f"s:{password}")

    def rpc(self, *command: str) -> str:
        """Run one RPC command through kamcmd on the running server; its output as text."""
        if self._process is None:
            raise RuntimeError("kamailio is not running")
        result = subprocess.run(
            [_binary("kamcmd"), "-s", f"unix:{self._ctl_socket}", *command],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kamcmd {command[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def registered_contacts(self, user: str) -> str:
        """usrloc's record for ``user`` (contacts, instance ids...), as kamcmd prints it."""
        return self.rpc("ul.lookup", "location", f"s:{user}")

    def _redirect_lines(self) -> str:
        lines = []
        for extension, target in sorted(self.redirects.items()):
            contact = f"sip:{target}@{self.domain}"
            lines += [
                f'    if (is_method("INVITE") && $rU == "{extension}") {{',
                f'        append_to_reply("Contact: <{contact}>\\r\\n");',
                '        sl_send_reply("302", "Moved Temporarily");',
                "        exit;",
                "    }",
            ]
        return "\n".join(lines)

    def _mwi_lines(self) -> str:
        if self.mwi_server is None:
            return ""
        host, port = self.mwi_server
        return "\n".join(
            [
                '    if (is_method("SUBSCRIBE") && $hdr(Event) =~ "message-summary") {',
                f'        $du = "sip:{host}:{port}";',
                "        route(RELAY);",
                "    }",
            ]
        )

    def _media_parts(self) -> dict[str, str]:
        """rtpproxy module lines: offers (INVITE), answers (replies) and BYE/CANCEL teardown."""
        if self.media_relay is None:
            return {"media_modules": "", "media_lines": "", "media_reply_route": ""}
        host, port = self.media_relay
        return {
            "media_modules": _MEDIA_MODULES.format(host=host, port=port),
            "media_lines": _MEDIA_LINES,
            "media_reply_route": _MEDIA_REPLY_ROUTE,
        }

    def _user_lines(self) -> str:
        return "\n".join(f'    $sht(users=>{u}) = "{p}";' for u, p in sorted(self._users.items()))

    def render_config(self) -> str:
        """kamailio.cfg for the current ports, users, redirects, MWI notifier and presence."""
        presence = self.presence
        db_dir = self.directory / "dbtext"
        return _CONFIG.format(
            presence_modules=_PRESENCE_MODULES if presence else "",
            presence_params=(
                _PRESENCE_PARAMS.format(db_dir=db_dir, host=HOST, udp=self.udp_port)
                if presence
                else ""
            ),
            presence_lines=_PRESENCE_LINES if presence else "",
            dialog_lines=_DIALOG_LINES if presence else "",
            presence_route=_PRESENCE_ROUTE if presence else "",
            tcp_globals=(
                f"tcp_connection_lifetime={self.tcp_lifetime_s}\n"
                if self.tcp_lifetime_s is not None
                else ""
            ),
            host=HOST,
            udp=self.udp_port,
            tcp=self.tcp_port,
            tls=self.tls_port,
            modules=_module_dir(),
            tls_cfg=self._tls_cfg,
            ctl_socket=self._ctl_socket,
            user_lines=self._user_lines() or "    return;",
            redirect_lines=self._redirect_lines(),
            mwi_lines=self._mwi_lines(),
            **self._media_parts(),
        )

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("kamailio already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        certs = self.certificates
        if self.presence:
            self._write_presence_tables()
        self._tls_cfg.write_text(_TLS_CFG.format(key=certs.key, cert=certs.cert, ca=certs.ca_cert))
        last_error = ""
        for _ in range(_START_ATTEMPTS):  # a probed port can be taken by someone else meanwhile
            self.udp_port = free_port()
            self.tcp_port = self.udp_port
            self.tls_port = free_port((socket.SOCK_STREAM,))
            config = self.directory / "kamailio.cfg"
            config.write_text(self.render_config())
            run_dir = self.directory / "run"
            run_dir.mkdir(exist_ok=True)
            log_file = self.log_path.open("ab")
            command = [_binary("kamailio"), "-DD", "-E", "-f", str(config), "-Y", str(run_dir)]
            self._process = subprocess.Popen(
                [*command, "-m", "32", "-M", "4"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
            log_file.close()
            if self._wait_ready():
                log.info(
                    "kamailio ready",
                    extra=kv(
                        udp_port=self.udp_port, tls_port=self.tls_port, directory=self.directory
                    ),
                )
                return
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"kamailio did not start; log tail:\n{last_error}")

    def _write_presence_tables(self) -> None:
        if not (_DBTEXT_TEMPLATES / "presentity").is_file():
            raise RuntimeError(f"{_DBTEXT_TEMPLATES}: db_text templates missing (install kamailio)")
        if not os.path.isfile(os.path.join(_module_dir(), "presence_dialoginfo.so")):
            raise RuntimeError("Kamailio presence modules missing (kamailio-presence-modules)")
        db_dir = self.directory / "dbtext"
        db_dir.mkdir(exist_ok=True)
        for table in _PRESENCE_TABLES:
            shutil.copyfile(_DBTEXT_TEMPLATES / table, db_dir / table)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if sip_options_ping(self.udp_port, timeout=0.2):
                return True
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, grace_s=5, group=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> KamailioServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The host-side Kamailio configurations the boot test and the boot call run.

One registrar for both: the boot test only needs REGISTER answered (and logged, which is how it sees
"registered"); the boot call adds a stateless proxy for the call between the guest and the host's
baresip, with the SDP rewritten across QEMU's user-mode NAT.
"""

from __future__ import annotations

_HEADER = """#!KAMAILIO
debug=2
log_stderror=yes
memdbg=5
memlog=5
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
"""

_CALL_MODULES = """loadmodule "nathelper.so"
loadmodule "sdpops.so"
"""

_REGISTER = """modparam("usrloc", "db_mode", 0)
request_route {{
    if (is_method("REGISTER")) {{
        if (save("location")) {{
            xlog("L_NOTICE", "offhook-registered aor=$tu contact=$ct\\n");
        }}
        exit;
    }}
"""

_REGISTRAR_ONLY = """    sl_send_reply("404", "Not here");
}}
"""

# The guest sits behind QEMU's NAT: its INVITE's SDP names its own address, so the host's baresip is
# told to send to {rtp_port} on loopback (forwarded into the guest); the answer going back names the
# host as the guest sees it.
_CALL_ROUTE = """    if (is_method("CANCEL") || is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (has_totag()) {{
        sl_send_reply("404", "No dialogs here");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not registered");
        exit;
    }}
    if (nat_uac_test("1")) {{
        fix_nated_contact();
        if (sdp_get_line_startswith("$avp(mline)", "m=audio")) {{
            xlog("L_NOTICE", "offhook-invite from=$fU $avp(mline)\\n");
        }}
        subst_body("/c=IN IP4 [0-9.]+/c=IN IP4 127.0.0.1/g");
        subst_body("/m=audio [0-9]+/m=audio {rtp_port}/");
        t_on_reply("TO_GUEST");
    }}
    t_relay();
    exit;
}}
onreply_route[TO_GUEST] {{
    if (has_body("application/sdp")) {{
        subst_body("/c=IN IP4 127\\.0\\.0\\.1/c=IN IP4 {guest_host}/g");
    }}
    subst_hf("Contact", "/@127\\.0\\.0\\.1:/@{guest_host}:/", "a");
}}
"""


def registrar_config(port: int) -> str:
    """A registrar on udp:127.0.0.1:port that logs each registration and refuses everything else."""
    return (_HEADER + _REGISTER + _REGISTRAR_ONLY).format(port=port)


def call_config(port: int, rtp_port: int, guest_host: str) -> str:
    """The registrar plus the proxy for one call between the guest and the host."""
    template = _HEADER + _CALL_MODULES + _REGISTER + _CALL_ROUTE
    return template.format(port=port, rtp_port=rtp_port, guest_host=guest_host)

"""The Phone's BLF keys, text messages and action URLs (pure core: events in, commands out)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from offhook.firmware.events import (
    ActionUrl,
    CallIncoming,
    CallState,
    CallStateChanged,
    ExtensionState,
    HookChanged,
    KeyPressed,
    MakeCall,
    MessageReceived,
    RegistrationChanged,
    SetLed,
    WatchedDialog,
    WatchExtensions,
)
from offhook.firmware.features.blf import Lamp, Watched, replaces_value
from offhook.firmware.features.messages import MAX_MESSAGES
from tests.unit.firmware.test_phone import Driver, make_config

BLF = [{"extension": "1002", "label": "Bob"}, {"extension": "1003"}]
RINGING = WatchedDialog(
    call_id="abc@caller",
    state="early",
    direction="recipient",
    local_tag="bobtag",
    remote_tag="callertag",
    remote_uri="sip:1005@pbx.example",
    remote_target="sip:1005@10.0.0.5:5062",
)
TALKING = WatchedDialog(call_id="abc@caller", state="confirmed", direction="recipient")


def blf_driver() -> Driver:
    return Driver(make_config(blf=BLF))


# --- BLF ------------------------------------------------------------------------------------------


def test_start_subscribes_to_every_watched_extension_and_the_lamps_start_off() -> None:
    d = blf_driver()
    watch = d.of(WatchExtensions)
    assert [w.watches for w in watch] == [((0, "1002"), (0, "1003"))]
    assert SetLed("blf1", "off") in d.out and SetLed("blf2", "off") in d.out


def test_no_blf_keys_no_subscriptions() -> None:
    assert Driver().of(WatchExtensions) == []


def test_the_lamp_blinks_while_it_rings_there_is_on_in_a_call_and_off_when_idle() -> None:
    d = blf_driver()
    d(ExtensionState("1002", (RINGING,)))
    assert SetLed("blf1", "fast_blink") in d.out
    assert "Bob ringing" in d.lines
    d(ExtensionState("1002", (TALKING,)))
    assert SetLed("blf1", "on") in d.out
    assert "Bob ringing" not in d.lines
    d(ExtensionState("1002", ()))
    assert SetLed("blf1", "off") in d.out
    assert d.phone.state.leds["blf2"] == "off"  # the other key is not concerned


def test_a_call_the_colleague_places_is_busy_not_ringing() -> None:
    outgoing = WatchedDialog(call_id="x", state="early", direction="initiator")
    assert Watched(True, (outgoing,)).lamp is Lamp.BUSY
    assert Watched(True, (RINGING, TALKING)).lamp is Lamp.RINGING  # pick-up-able wins
    assert Watched(False, (RINGING,)).lamp is Lamp.UNKNOWN
    ended = WatchedDialog(call_id="x", state="terminated")
    assert Watched(True, (ended,)).lamp is Lamp.IDLE


def test_pressing_the_key_calls_the_extension() -> None:
    d = blf_driver()
    d(ExtensionState("1002", ()))
    d(KeyPressed("blf1"))
    assert d.of(MakeCall) == [MakeCall(0, "1002")]
    assert d.phone.screen.kind == "calling"


def test_pressing_the_key_while_it_rings_there_picks_the_call_up_with_replaces() -> None:
    d = blf_driver()
    d(ExtensionState("1002", (RINGING,)))
    d(HookChanged(True))
    d(KeyPressed("blf1"))
    # to the caller's contact; the tags as the caller sees its dialog (RFC 3891)
    expected = "abc@caller;to-tag=callertag;from-tag=bobtag;early-only"
    assert d.of(MakeCall) == [MakeCall(0, "sip:1005@10.0.0.5:5062", expected)]
    assert replaces_value(RINGING) == expected
    assert d.phone.state.last_dialled == ""  # redial does not repeat a pickup


def test_a_ringing_dialog_without_tags_is_called_not_picked_up() -> None:
    d = blf_driver()
    untagged = WatchedDialog(call_id="abc", state="early", direction="recipient")
    d(ExtensionState("1002", (untagged,)))
    d(KeyPressed("blf1"))
    assert d.of(MakeCall) == [MakeCall(0, "1002")]


def test_the_key_does_nothing_while_a_call_rings_here() -> None:
    d = blf_driver()
    d(CallIncoming(7, 0, "sip:2000@pbx.example", ""))
    d(KeyPressed("blf1"))
    assert d.of(MakeCall) == []


def test_a_lost_subscription_turns_the_lamp_off() -> None:
    d = blf_driver()
    d(ExtensionState("1002", (TALKING,)))
    d(ExtensionState("1002", (), subscribed=False))
    assert SetLed("blf1", "off") in d.out


def test_a_new_config_changes_the_subscriptions() -> None:
    from offhook.firmware.events import ConfigApplied

    d = blf_driver()
    d(ExtensionState("1003", (TALKING,)))
    d(ConfigApplied(make_config(blf=[{"extension": "1002"}])))
    assert [w.watches for w in d.of(WatchExtensions)] == [((0, "1002"),)]
    assert "1003" not in d.phone.state.watched
    assert SetLed("blf2", "off") not in d.out  # the key is gone, not only dark
    d(ConfigApplied(make_config()))
    assert [w.watches for w in d.of(WatchExtensions)] == [()]  # all subscriptions end


def test_reports_for_unwatched_extensions_are_ignored() -> None:
    d = blf_driver()
    d(ExtensionState("9999", (RINGING,)))
    assert "9999" not in d.phone.state.watched


# --- text messages --------------------------------------------------------------------------------


def message(body: str = "Lunch at 12?", name: str = "Alice") -> MessageReceived:
    return MessageReceived(0, "sip:1004@pbx.example", name, body)


def test_a_message_lights_the_indicator_and_the_idle_line() -> None:
    d = Driver()
    d(message())
    assert SetLed("mwi", "blink") in d.out
    assert d.phone.screen.status["texts"] == "1"
    assert "1 new text" in d.lines


def test_the_list_shows_messages_newest_first_and_opening_one_marks_it_read() -> None:
    d = Driver()
    d(message("first", "Alice"))
    d(message("second", "Bob"))
    d(KeyPressed("messages"))
    assert d.phone.screen.kind == "messages"
    assert d.lines == ("Messages (2 new)", "> *Bob: second", "  *Alice: first")
    d(KeyPressed("down"))
    d(KeyPressed("ok"))
    assert d.phone.screen.kind == "message"
    assert d.lines[1:] == ("first",) and d.lines[0].endswith("Alice")
    d(KeyPressed("cancel"))
    assert d.lines == ("Messages (1 new)", "  *Bob: second", "> Alice: first")
    d(KeyPressed("cancel"))
    assert d.phone.screen.kind == "idle"


def test_the_call_softkey_calls_the_sender() -> None:
    d = Driver()
    d(message())
    d(KeyPressed("messages"))
    assert d.phone.screen.softkeys == ("Back", "Call", "Reply", "Open")
    d(KeyPressed("softkey2"))
    assert d.of(MakeCall) == [MakeCall(0, "1004")]


def test_a_long_message_is_wrapped_and_marked_cut() -> None:
    d = Driver()
    d(message("word " * 40))
    d(KeyPressed("messages"))
    d(KeyPressed("ok"))
    assert len(d.lines) == 4 and all(len(line) <= 21 for line in d.lines)
    assert d.lines[-1].endswith("~")


def test_the_list_keeps_the_last_messages_only_and_reads_control_characters_as_spaces() -> None:
    d = Driver()
    for i in range(MAX_MESSAGES + 5):
        d(message(f"n{i}\x07\r\nend"))
    assert len(d.phone.state.messages) == MAX_MESSAGES
    assert d.phone.state.messages[0].body == f"n{MAX_MESSAGES + 4} end"


def test_the_lamp_goes_out_once_every_message_is_read() -> None:
    d = Driver()
    d(message())
    d(KeyPressed("messages"))
    d(KeyPressed("ok"))
    assert SetLed("mwi", "off") in d.out


# --- the idle screen ------------------------------------------------------------------------------


def test_idle_notices_share_one_line_so_the_softkeys_stay() -> None:
    d = Driver(make_config(blf=BLF))
    d(KeyPressed("dnd"))
    d(message())
    d(ExtensionState("1002", (RINGING,)))
    assert len(d.lines) == 3
    assert d.lines[2] == "Bob rings, 1 text, DND"
    assert d.phone.screen.softkeys == ("Calls", "Dir", "DND", "Texts")


# --- action URLs ----------------------------------------------------------------------------------

URLS = {
    "incoming": "http://crm.example/in?caller={caller}&name={caller_name}&id={call_id}",
    "answered": "http://crm.example/up?id={call_id}&dir={direction}",
    "ended": "http://crm.example/end?id={call_id}&secs={duration}&status={status}",
    "missed": "http://crm.example/missed?caller={caller}&status={status}",
    "registered": "http://crm.example/reg?line={line}&status={status}",
    "timeout_s": 2.5,
    "retries": 1,
}


def query(command: ActionUrl) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(command.url).query).items()}


def test_an_answered_call_fetches_incoming_answered_and_ended_with_one_call_id() -> None:
    d = Driver(make_config(action_urls=URLS))
    d(CallIncoming(7, 0, "sip:5551234@pbx.example", "Dr. Müller & Co"))
    (incoming,) = d.of(ActionUrl)
    assert incoming.event == "incoming" and incoming.timeout_s == 2.5 and incoming.retries == 1
    assert query(incoming) == {"caller": "5551234", "name": "Dr. Müller & Co", "id": "id0"}
    assert "Dr.%20M%C3%BCller%20%26%20Co" in incoming.url  # encoded, not split at &
    d(HookChanged(True))
    d(CallStateChanged(7, CallState.CONFIRMED, 200, direction="incoming"), advance=1)
    (answered,) = d.of(ActionUrl)
    assert query(answered) == {"id": "id0", "dir": "incoming"}
    d(CallStateChanged(7, CallState.DISCONNECTED, 200, "OK"), advance=42)
    (ended,) = d.of(ActionUrl)
    assert query(ended) == {"id": "id0", "secs": "42", "status": "200"}
    assert d.recorded[0].id == "id0"  # the CDR carries the same id


def test_a_call_given_up_by_the_caller_is_missed() -> None:
    d = Driver(make_config(action_urls=URLS))
    d(CallIncoming(7, 0, "sip:5551234@pbx.example", ""))
    d(CallStateChanged(7, CallState.DISCONNECTED, 487, "Request Terminated"))
    assert [(c.event, query(c)) for c in d.of(ActionUrl)] == [
        ("missed", {"caller": "5551234", "status": "487"})
    ]


def test_a_line_registering_fetches_registered_once() -> None:
    d = Driver(make_config(action_urls=URLS))
    d(RegistrationChanged(0, True, 200, "OK"))
    assert [query(c) for c in d.of(ActionUrl)] == [{"line": "1001", "status": "200"}]
    d(RegistrationChanged(0, True, 200, "OK"))  # a refresh is not news
    assert d.of(ActionUrl) == []


def test_no_template_no_fetch() -> None:
    d = Driver()
    d(CallIncoming(7, 0, "sip:5551234@pbx.example", ""))
    d(RegistrationChanged(0, True, 200, "OK"))
    assert d.of(ActionUrl) == []


# --- history entries ------------------------------------------------------------------------------


def test_history_labels_carry_time_name_and_duration_and_fit_the_panel() -> None:
    from zoneinfo import ZoneInfo

    from offhook.firmware.events import CallRecord
    from offhook.firmware.screens.lists import history_label

    def record(**fields: object) -> CallRecord:
        base: dict = dict(
            id="r", direction="incoming", account=0, local_uri="sip:1001@pbx",
            remote_uri="sip:2001@pbx", remote_name="Bob", start=1_700_000_000.0,
            answer=1_700_000_005.0, end=1_700_000_190.0, disposition="answered",
        )  # fmt: skip
        base.update(fields)
        return CallRecord(**base)

    assert history_label(record()) == "<22:13 Bob 3:05"
    assert history_label(record(), ZoneInfo("Europe/Berlin")) == "<23:13 Bob 3:05"
    long_name = history_label(record(remote_name="Maximilian Mustermann-Schmidt"))
    assert long_name == "<22:13 Maximi~ 3:05" and len(long_name) == 19
    missed = record(answer=None, disposition="missed", status_code=486, count=3, remote_name="")
    assert history_label(missed) == "!22:13 2001 x3"
    dialled = record(direction="outgoing", answer=None, disposition="busy")
    assert history_label(dialled) == ">22:13 Bob"


def test_every_softkey_label_fits_its_slot_on_the_panel() -> None:
    from offhook.firmware.devtools.screenshots import scenes
    from offhook.firmware.screens.oled import small_font
    from tests.unit.firmware.test_phone import ring, talk

    screens = [phone.screen for phone in scenes().values()]
    d = Driver()
    for step in (
        lambda: None,
        lambda: d(KeyPressed("history")),
        lambda: d(KeyPressed("cancel")),
        lambda: d(KeyPressed("menu")),
        lambda: d(KeyPressed("cancel")),
        lambda: d(HookChanged(True)),
        lambda: d(HookChanged(False)),
        lambda: ring(d),
        lambda: d(HookChanged(True)),
        lambda: d(KeyPressed("hold")),
        lambda: d(KeyPressed("transfer")),
    ):
        step()
        screens.append(d.phone.screen)
    d2 = Driver()
    talk(d2, "2001", call_id=1)
    screens.append(d2.phone.screen)
    for screen in screens:
        if not any(screen.softkeys):
            continue
        slot = 128 // len(screen.softkeys)
        for label in screen.softkeys:
            assert small_font().getlength(label) <= slot - 2, (screen.kind, label)


def test_the_snapshot_lists_the_lamps_and_the_messages() -> None:
    d = blf_driver()
    d(ExtensionState("1002", (RINGING,)))
    d(message())
    snap = d.phone.snapshot(d.now)
    assert snap["blf"] == [
        {"key": "blf1", "extension": "1002", "label": "Bob", "lamp": "ringing"},
        {"key": "blf2", "extension": "1003", "label": "1003", "lamp": "unknown"},
    ]
    assert snap["messages"] == {"count": 1, "unread": 1}

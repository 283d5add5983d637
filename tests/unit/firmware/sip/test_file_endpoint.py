"""FileEndpoint: the engine's audio from and to raw files, frame by frame."""

from __future__ import annotations

from pathlib import Path

from offhook.firmware.sip.file_endpoint import EchoEndpoint, FileEndpoint


def test_capture_frames_come_from_the_file_in_order_then_silence(tmp_path: Path) -> None:
    source = tmp_path / "mic.raw"
    frame_bytes = 320 * 2
    source.write_bytes(bytes(range(256)) * 5)  # 1280 bytes: two frames, then nothing
    endpoint = FileEndpoint(play=source, sample_rate=16000)
    assert endpoint.frame_samples == 320
    first, second, third = (endpoint.read_capture_frame() for _ in range(3))
    assert first + second == source.read_bytes()[: 2 * frame_bytes]
    assert third == bytes(frame_bytes)


def test_received_frames_are_written_in_order_on_close(tmp_path: Path) -> None:
    record = tmp_path / "out.raw"
    endpoint = FileEndpoint(record=record, sample_rate=8000)
    frames = [bytes([n]) * 320 for n in range(5)]
    for frame in frames:
        endpoint.write_playback_frame(frame)
    assert not record.exists()
    endpoint.close()
    assert record.read_bytes() == b"".join(frames)
    assert endpoint.frames_played == 5
    assert FileEndpoint().read_capture_frame() == bytes(640)  # no file: silence


def test_echo_endpoint_sends_back_what_it_received() -> None:
    echo = EchoEndpoint(sample_rate=16000)
    assert echo.read_capture_frame() == bytes(640)  # nothing received yet
    echo.write_playback_frame(b"\x01" * 640)
    echo.write_playback_frame(b"\x02" * 640)
    assert echo.read_capture_frame() == b"\x01" * 640
    assert echo.read_capture_frame() == b"\x02" * 640
    assert echo.read_capture_frame() == bytes(640)

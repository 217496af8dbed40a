"""Minutes of two-channel WAV callbridge makes per CPU-second when it joins a call's recording segments.

The input is what rtpengine writes for a recorded call (`--recording-method=pcap`): classic pcap files, raw IP,
one per start of the recording, each holding every RTP packet the relay received for the call. They are written
here by tests/media/pcap_writer.py: `--minutes` of a call (the customer sends a 700 Hz tone to the relay's port
facing it, the agent 1000 Hz to another port, 20 ms G.711 mu-law packets, both directions all along) cut into
`--segments` segments with a 2 s pause between each two (what a pause on the API makes).

Measured, each the best of `--repeat` runs, in CPU seconds of this process (`time.process_time`):

- **callbridge**: `callbridge.media.recording.convert_recording(segments, customer_port=..., out=file)`, exactly
  what the node runs in a worker thread when a recorded call ends: read and parse the pcaps, place every packet by
  its RTP timestamp, decode, mix the other parties, find the pauses, write the WAV.
- **ceiling, the same run**: a naive join of the same files: read and parse the same pcaps (`read_pcap`), take
  each RTP payload, decode it with the same G.711 table and append it to its channel in arrival order (no
  placement in time, no duplicate check, no mixing, no pauses), interleave and write the WAV with the `wave`
  module: the floor of the work any joiner of these files must do in Python.

The figure is output minutes per CPU-second; ratio = callbridge / ceiling. Both WAVs are checked: the same number
of channels and rate, callbridge's as long as the call with its pauses, the naive one as long as the audio.

    .venv/bin/python bench/recording_conversion.py [--minutes 10] [--segments 3] [--repeat 3] [--record]
    .venv/bin/python bench/recording_conversion.py --quick     # tiny mode (tests/bench)

`--record` appends the row to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import wave
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "media"))

from pcap_writer import PcapWriter  # noqa: E402

from callbridge.media.g711 import PCMU, decode, ulaw_encode  # noqa: E402
from callbridge.media.pcap import read_pcap  # noqa: E402
from callbridge.media.recording import convert_recording  # noqa: E402
from callbridge.media.rtp_packet import build, is_rtcp, parse  # noqa: E402

CUSTOMER, RELAY_CUSTOMER = ("203.0.113.7", 40000), ("192.0.2.1", 20000)
AGENT, RELAY_AGENT = ("198.51.100.8", 30000), ("192.0.2.1", 20002)
PAUSE = 2.0
T0 = 1_780_000_000.0


def frames(hz: float) -> list[bytes]:
    """One second of 20 ms mu-law frames of a tone (cycled: a tone's frames repeat every second)."""
    return [ulaw_encode(round(8000 * math.sin(2 * math.pi * hz * (k * 160 + i) / 8000)) for i in range(160))
            for k in range(50)]


def write_segments(folder: Path, minutes: float, segments: int) -> tuple[list[Path], int]:
    """The call's pcaps and their number of RTP packets."""
    customer, agent = frames(700.0), frames(1000.0)
    per_segment = round(minutes * 60 * 50 / segments)
    paths, packets, start = [], 0, T0
    for number in range(segments):
        writer = PcapWriter()
        for k in range(per_segment):
            n = number * per_segment + k
            at = start + k * 0.02
            writer.add(at, CUSTOMER, RELAY_CUSTOMER, build(0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x1111,
                                                           customer[k % 50]))
            writer.add(at + 0.0004, AGENT, RELAY_AGENT, build(0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x2222,
                                                              agent[k % 50]))
        path = folder / f"call-{number:016x}.pcap"
        path.write_bytes(writer.to_bytes())
        paths.append(path)
        packets += 2 * per_segment
        start += per_segment * 0.02 + PAUSE
    return paths, packets


def naive_join(paths: list[Path], out: Path) -> float:
    """The ceiling's join (module docstring); seconds of audio written."""
    left, right = array("h"), array("h")
    for path in paths:
        for udp in read_pcap(path.read_bytes(), path.name).packets:
            if is_rtcp(udp.payload):
                continue
            packet = parse(udp.payload)
            (left if udp.destination[1] == RELAY_CUSTOMER[1] else right).extend(decode(PCMU, packet.payload))
    length = max(len(left), len(right))
    left.extend(bytes(2 * (length - len(left))))
    right.extend(bytes(2 * (length - len(right))))
    stereo = array("h", bytes(4 * length))
    stereo[0::2], stereo[1::2] = left, right
    if sys.byteorder != "little":
        stereo.byteswap()
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo.tobytes())
    return length / 8000


def best_cpu(run: object, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        began = time.process_time()
        run()  # type: ignore[operator]
        best = min(best, time.process_time() - began)
    return best


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        return wav.getnframes() / 8000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of call audio (10)")
    parser.add_argument("--segments", type=int, default=3, help="segments, with a 2 s pause between each two (3)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each join; the best counts (3)")
    parser.add_argument("--quick", action="store_true", help="tiny mode: 0.5 minutes, one run each")
    parser.add_argument("--record", action="store_true", help="append the row to bench/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.repeat = 0.5, 1
    with tempfile.TemporaryDirectory(prefix="bench-recording-") as tmp:
        folder = Path(tmp)
        paths, packets = write_segments(folder, args.minutes, args.segments)
        size = sum(p.stat().st_size for p in paths)
        ours_wav, naive_wav = folder / "callbridge.wav", folder / "naive.wav"
        result = []
        ours = best_cpu(lambda: result.append(convert_recording(paths, customer_port=RELAY_CUSTOMER[1],
                                                                out=ours_wav)), args.repeat)
        naive = best_cpu(lambda: naive_join(paths, naive_wav), args.repeat)
        recording = result[-1]
        output_minutes = wav_seconds(ours_wav) / 60
        expected = args.minutes + PAUSE * (args.segments - 1) / 60
        ok = (abs(output_minutes - expected) < 0.001 and len(recording.pauses) == args.segments - 1
              and abs(wav_seconds(naive_wav) / 60 - args.minutes) < 0.001)
        ours_rate, naive_rate = output_minutes / ours, output_minutes / naive
    print(f"recording_conversion: {output_minutes:.2f} min of two-channel WAV from {args.segments} segments "
          f"({packets:,} RTP packets, {size / 2**20:.1f} MiB of pcap, {len(recording.pauses)} pauses)")
    print(f"callbridge (convert_recording): {ours:.3f} CPU-s, best of {args.repeat}: {ours_rate:.2f} minutes per "
          "CPU-second")
    print(f"ceiling, naive join of the same pcaps (read, decode, append, wave): {naive:.3f} CPU-s: "
          f"{naive_rate:.2f} minutes per CPU-second")
    print(f"ratio: {ours_rate / naive_rate:.2f}")
    print(f"output checked: {'yes' if ok else 'NO'}")
    if args.record:
        load = " ".join(f"{x:.2f}" for x in __import__("os").getloadavg())
        row = (f"| recording_conversion (bench/recording_conversion.py): {args.minutes:g} min of a call as "
               f"{args.segments} rtpengine-style pcap segments ({packets:,} RTP packets, {size / 2**20:.1f} MiB) "
               f"joined into one two-channel WAV, best of {args.repeat}, CPU time; load average {load} "
               f"| {ours_rate:.1f} WAV minutes per CPU-second | {naive_rate:.1f} minutes per CPU-second (naive "
               f"join of the same pcaps: read, decode, append, wave) | {ours_rate / naive_rate:.2f} | ≥ 1 WAV "
               f"minute per CPU-second | `.venv/bin/python bench/recording_conversion.py "
               f"--minutes {args.minutes:g} --segments {args.segments} --repeat {args.repeat}` "
               f"| {time.strftime('%Y-%m-%d')} |\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as out:
            out.write(row)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""A real cgminer 4.11.1 with no devices, replayed byte for byte from the live capture.

JSON and plain-text forms, the captured `summary+devs+pools` and `summary+addpool+bogus`
multi-commands, bad command / bad JSON, `switchpool 99`, `quit`; with `read_only=True` it
answers privileged commands with the captured access-denied replies (Code 45), as cgminer does
under `--api-allow R:127.0.0.1`. For transport tests; it has no mining state.
"""

from __future__ import annotations

from hal.sim.asic.server import DATA_DIR, FirmwareServer, load_capture

CAPTURES = "cgminer_4.11.1_live_nodevice"
_PRIVILEGED = {"privileged"}


class CgminerSim(FirmwareServer):
    family = "cgminer"
    multi_allowed = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, read_only: bool = False) -> None:
        super().__init__(host, port)
        self.read_only = read_only

    def dispatch(self, request: bytes) -> bytes:
        text = request.rstrip(b"\x00").decode("utf-8", "replace").strip()
        if not text.startswith("{"):
            command = text.partition("|")[0]
            self.requests.append(command)
            name = "text_multi_" + command if "+" in command else "text_" + command
            if (DATA_DIR / CAPTURES / f"{name}.raw").exists():
                return load_capture(f"{CAPTURES}/{name}.raw")
            return load_capture(f"{CAPTURES}/badcmd.raw")
        captured = {
            '"summary+devs+pools"': "multi_summary+devs+pools.raw",
            '"summary+addpool+bogus"': "multi_with_invalid.raw",
        }
        for marker, name in captured.items():
            if marker in text:
                self.requests.append(marker.strip('"'))
                return load_capture(f"{CAPTURES}/{name}")
        return super().dispatch(request)

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if self.read_only:
            if command == "summary":
                return load_capture(f"{CAPTURES}/readonly_summary.raw")
            if command == "addpool":
                return load_capture(f"{CAPTURES}/readonly_addpool_denied.raw")
            if command in _PRIVILEGED:
                return load_capture(f"{CAPTURES}/readonly_privileged.raw")
        if command == "switchpool":
            return load_capture(f"{CAPTURES}/switchpool_99.raw")
        path = DATA_DIR / CAPTURES / f"{command}.raw"
        if command.isidentifier() and path.exists():
            return path.read_bytes()
        return None

"""What the kernel tests share to see which entries an op chose: the runtime's dispatches recorded as they happen."""

from __future__ import annotations


def entries_dispatched(device, monkeypatch) -> list[str]:
    """The entries dispatched on `device` from now on, in order (the dispatches still run)."""
    seen = []
    dispatch = device.runtime.dispatch

    def recording(kernel, entry, *args, **kwargs):
        seen.append(entry)
        return dispatch(kernel, entry, *args, **kwargs)

    monkeypatch.setattr(device.runtime, "dispatch", recording)
    return seen

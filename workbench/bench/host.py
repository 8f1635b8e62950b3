"""What the host CPU is, for the benches' machine lines."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name(cpuinfo: str | None = None) -> str:
    """The first CPU's model name with its CPUID family and model: under KVM the name is often just
    "AMD EPYC" or "Intel(R) Xeon(R) Processor", which does not tell a Zen 4 (family 25) from a Zen 5
    (26), or a Sapphire Rapids (6, model 143) from an Emerald Rapids (6, 207)."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (CPUID family {fields['cpu family']}, model {fields['model']})"
    return name

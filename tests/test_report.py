"""mnv4_kernels.report: the machine tag that names results files (Zen 4 and Zen 5 VMs both say "AMD EPYC") and the
ISA flags every results file records."""

import pytest

from mnv4_kernels.report import _cpuinfo_fields, amd_core_generation, isa_flags


def _cpuinfo(vendor, family, model, cpus=2):
    one = f"processor\t: {{}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
    return "\n".join(one.format(i) for i in range(cpus))


@pytest.mark.parametrize("family, model, gen", [
    (25, 0x01, "zen3"), (25, 0x21, "zen3"), (25, 0x11, "zen4"), (25, 0x61, "zen4"), (25, 0xA0, "zen4"),
    (26, 0x02, "zen5"), (26, 0x44, "zen5"), (23, 0x31, None),
])
def test_amd_core_generation(family, model, gen):
    assert amd_core_generation(_cpuinfo_fields(_cpuinfo("AuthenticAMD", family, model))) == gen


def test_other_vendors_and_missing_fields_give_none():
    assert amd_core_generation(_cpuinfo_fields(_cpuinfo("GenuineIntel", 6, 0x8F))) is None
    assert amd_core_generation(_cpuinfo_fields("processor\t: 0\nvendor_id\t: AuthenticAMD\n")) is None
    assert amd_core_generation({}) is None


def test_fields_are_the_first_processors():
    text = _cpuinfo("AuthenticAMD", 26, 2) + "\n\n" + "processor\t: 9\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
    f = _cpuinfo_fields(text)
    assert f["cpu family"] == "26" and f["processor"] == "0"


def test_isa_flags_x86_keeps_instruction_sets_only():
    flags = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c smep avx512f avx512_bf16 avx512_fp16 amx_bf16 " \
            "amx_tile amx_int8 avx_vnni hypervisor"
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: " + flags + "\n"
    assert isa_flags(_cpuinfo_fields(text)) == ["amx_bf16", "amx_int8", "amx_tile", "avx", "avx2", "avx512_bf16",
                                                "avx512_fp16", "avx512f", "avx_vnni", "f16c", "fma", "sse4_1",
                                                "sse4_2", "ssse3"]


def test_isa_flags_aarch64_features():
    text = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimdhp cpuid asimddp sve bf16 i8mm sme sme2\n"
    assert isa_flags(_cpuinfo_fields(text)) == ["asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sme", "sme2", "sve"]
    assert isa_flags({}) == []

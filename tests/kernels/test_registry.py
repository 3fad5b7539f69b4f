"""The kernel registry: entry points, their bindings, element-type and subgroup specialization."""

from __future__ import annotations

import pytest

from wgrpo import kernels


def test_every_family_parses_and_has_entries():
    for family in kernels.families():
        source = kernels.load(family)
        assert source.entries, f"{family}.wgsl has no @compute entry"
        for entry, bindings in source.entries.items():
            assert len({b.binding for b in bindings}) == len(bindings), f"{family}.{entry} binds a slot twice"


def test_entries_bind_only_what_they_use():
    source = kernels.load("elementwise")
    assert [b.name for b in source.bindings("silu_naive")] == ["params", "x", "y"]
    assert [(b.name, b.kind) for b in source.bindings("add_naive")] == [
        ("params", "uniform"), ("a", "read"), ("b", "read"), ("out", "read_write")]


def test_f16_build_enables_f16_and_swaps_the_alias():
    code = kernels.load("matmul", "f16").code
    assert code.startswith("enable f16;") and "alias elem = f16;" in code and "alias elem = f32;" not in code


def test_subgroup_block_is_cut_without_subgroups():
    full, cut = kernels.load("matmul"), kernels.load("matmul", subgroups=False)
    assert "matmul_sg32x4" in full.entries and "matmul_sg32x4" not in cut.entries
    assert "matmul_reg8x4" in cut.entries and "fn matmul_sg" not in cut.code


def test_stripped_module_compiles(device):
    device.wgpu.create_shader_module(code=kernels.load("matmul", subgroups=False).code)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no kernel family 'nope'"):
        kernels.load("nope")
    with pytest.raises(ValueError, match="elem must be one of"):
        kernels.load("matmul", "f64")
    with pytest.raises(ValueError, match="cannot be built for f16"):
        kernels.load("probe", "f16")

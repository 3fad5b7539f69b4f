"""The kernel registry: entry points, their bindings, workgroup sizes, the prelude, element-type and subgroup
specialization."""

from __future__ import annotations

import re

import pytest

from wgrpo import kernels
from wgrpo.kernels import registry
from wgrpo.kernels.registry import parse

PRELUDE_TEXT = (registry.KERNEL_DIR / "prelude.wgsl").read_text()
PRELUDE_NAMES = re.findall(r"^(?:fn|const)\s+(\w+)", PRELUDE_TEXT, re.MULTILINE)


def test_every_family_parses_and_has_entries():
    for family in kernels.families():
        source = kernels.load(family)
        assert source.entries, f"{family}.wgsl has no @compute entry"
        for entry, bindings in source.entries.items():
            assert len({b.binding for b in bindings}) == len(bindings), f"{family}.{entry} binds a slot twice"
            assert source.params(entry) is not None, f"{family}.{entry} binds no Params struct"
            assert all(size >= 1 for size in source.workgroup_size(entry))


def test_entries_bind_only_what_they_use():
    source = kernels.load("elementwise")
    assert [b.name for b in source.bindings("silu_naive")] == ["map_params", "x", "y"]
    assert [(b.name, b.kind) for b in source.bindings("add_naive")] == [
        ("broadcast_params", "uniform"), ("a", "read"), ("b", "read"), ("out", "read_write")]


def test_workgroup_sizes_are_read_from_the_wgsl():
    assert kernels.workgroup_size("elementwise", "add_naive") == (256, 1, 1)  # `const WG: u32 = 256u;`
    assert kernels.workgroup_size("attention", "attention_serial") == (16, 1, 1)  # `const WG: u32 = 16u;`
    logprob = kernels.load("logprob")
    assert logprob.workgroup_size("log_softmax_serial") == (64, 1, 1)  # SERIAL_WG
    assert logprob.workgroup_size("log_softmax_workgroup") == (256, 1, 1)  # WG
    matmul = kernels.load("matmul")
    assert matmul.workgroup_size("matmul_naive") == (8, 8, 1)  # the defaults of `override NAIVE_X`, `NAIVE_Y`
    assert matmul.workgroup_size("matmul_naive", {"NAIVE_X": 4}) == (4, 8, 1)  # a pipeline's override value
    assert matmul.invocations("matmul_reg8x4") == 64


def test_workgroup_size_literals_consts_and_errors():
    code = ("const A: u32 = 4u;\noverride B: u32 = 0x10;\noverride C: u32;\n"
            "@compute @workgroup_size(3) fn lit() {}\n@workgroup_size(A, 2u) @compute fn named() {}\n"
            "@compute @workgroup_size(B, A, 2) fn both() {}\n@compute @workgroup_size(C) fn unset() {}\n"
            "@compute @workgroup_size(A * 2u) fn expression() {}\n")
    source = parse("test", "f32", code)
    assert source.workgroup_size("lit") == (3, 1, 1)
    assert source.workgroup_size("named") == (4, 2, 1)  # attributes in either order
    assert source.workgroup_size("both") == (16, 4, 2)
    assert source.workgroup_size("unset", {"C": 32}) == (32, 1, 1)
    with pytest.raises(ValueError, match=r"test\.unset: @workgroup_size names 'C', which is not a const or override "
                                         r"with an integer value"):
        source.workgroup_size("unset")
    assert source.workgroup_size("named", {"A": 8}) == (4, 2, 1)  # pipeline constants set overrides, not consts
    with pytest.raises(ValueError, match=r"'A \* 2u'"):
        source.workgroup_size("expression")


def test_module_constants_are_read():
    assert kernels.load("norm_clip").constants["CHUNK"] == 4096
    assert kernels.load("attention").constants["MAX_D"] == 128
    assert kernels.load("softmax").constants["LOWEST"] == -3.4028234663852886e38  # from the prelude


def test_prelude_is_included_once_and_defines_each_helper_once():
    assert set(PRELUDE_NAMES) >= {"LOWEST", "workgroup_index", "flat_index", "online", "merge_stats"}
    users = 0
    for family in kernels.families():
        own = (registry.KERNEL_DIR / f"{family}.wgsl").read_text()
        for name in PRELUDE_NAMES:
            assert not re.search(rf"^(?:fn|const)\s+{name}\b", own, re.MULTILINE), \
                f"{family}.wgsl defines the prelude's {name} again"
        code = kernels.load(family).code
        uses = own.count("// use prelude")
        assert code.count(PRELUDE_TEXT.rstrip("\n")) == uses <= 1
        users += uses
    assert users >= 10
    assert "prelude" not in kernels.families()
    with pytest.raises(ValueError, match=r"prelude\.wgsl holds the helpers families include"):
        kernels.load("prelude")


def test_prelude_twice_is_refused():
    with pytest.raises(ValueError, match=r"x\.wgsl has 2 `// use prelude` lines; the prelude may be included once"):
        registry.expand_includes("// use prelude\n// use prelude\n", "x.wgsl", "x")


def test_a_family_includes_its_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "KERNEL_DIR", tmp_path)
    (tmp_path / "prelude.wgsl").write_text("const SHARED: u32 = 7u;\n")
    (tmp_path / "split.wgsl").write_text("// use prelude\n// use split.entries\nfn helper() -> u32 { return SHARED; }\n")
    (tmp_path / "split.entries.wgsl").write_text("// the entries\n@compute @workgroup_size(4) fn go() { helper(); }\n\n")
    source = kernels.load("split")
    assert source.code == ("const SHARED: u32 = 7u;\n// the entries\n@compute @workgroup_size(4) fn go() { helper(); }\n"
                           "fn helper() -> u32 { return SHARED; }\n")
    assert list(source.entries) == ["go"] and source.workgroup_size("go") == (4, 1, 1)
    assert registry.families() == ["split"]  # a part is no family
    with pytest.raises(ValueError, match=r"split\.entries\.wgsl is a part of the 'split' family"):
        kernels.load("split.entries")


@pytest.mark.parametrize("text, message", [
    ("// use other.part\n", r"p1\.wgsl: `// use other\.part` names neither the prelude nor a part of p1"),
    ("// use p1.missing\n", r"p1\.wgsl: `// use p1\.missing`: .*p1\.missing\.wgsl does not exist"),
    ("// use p1.part\n// use p1.part\n", r"p1\.wgsl has 2 `// use p1\.part` lines; p1\.part may be included once"),
    ("// use p1.nested\n", r"p1\.nested\.wgsl: a part includes nothing \(`// use prelude`\)"),
])
def test_bad_includes_are_refused(tmp_path, monkeypatch, text, message):
    monkeypatch.setattr(registry, "KERNEL_DIR", tmp_path)
    (tmp_path / "prelude.wgsl").write_text("const SHARED: u32 = 7u;\n")
    (tmp_path / "p1.part.wgsl").write_text("fn f() {}\n")
    (tmp_path / "p1.nested.wgsl").write_text("// use prelude\nfn g() {}\n")
    with pytest.raises(ValueError, match=message):
        registry.expand_includes(text, "p1.wgsl", "p1")


def test_every_build_compiles(device):
    """Each family with the prelude expanded, in f32, f16 where the adapter has it and the family allows it,
    with the subgroup block cut, and with wide reads (plain and packed weights) where the family has them."""
    for family in kernels.families():
        builds = [("f32", True), ("f32", False)] + ([("f16", device.has_subgroups)] if device.has_f16 else [])
        for elem, subgroups in builds:
            if not device.has_subgroups and subgroups:
                continue
            try:
                source = kernels.load(family, elem, subgroups)
            except ValueError as error:
                assert "cannot be built for f16" in str(error)
                continue
            _compiles(device, source)
        if device.has_int64 and device.has_subgroups and kernels.load(family, wide_reads=True).code != kernels.load(family).code:
            packs = registry._WEIGHTS_BLOCK.search(kernels.load(family).code) is not None
            for weights in ("elem", "bf16") if packs else ("elem",):
                _compiles(device, kernels.load(family, weights=weights, wide_reads=True))


def _compiles(device, source) -> None:
    module = device.wgpu.create_shader_module(code=source.code)
    for entry in source.entries:
        device.wgpu.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": entry})


def test_an_entry_binding_two_uniforms_is_refused():
    code = ("struct A { x: u32, }\n@group(0) @binding(0) var<uniform> a: A;\n@group(0) @binding(1) var<uniform> b: A;\n"
            "@compute @workgroup_size(1) fn both() { let s = a.x + b.x; }\n")
    with pytest.raises(ValueError, match=r"test\.both binds 2 uniforms \['a', 'b'\]; an entry binds at most one"):
        parse("test", "f32", code)


def test_an_entry_without_a_uniform_has_no_params():
    code = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn e() { out[0] = 1u; }\n"
    assert parse("test", "f32", code).params("e") is None


def test_f16_build_enables_f16_and_swaps_the_alias():
    code = kernels.load("matmul", "f16").code
    assert code.startswith("enable f16;") and "alias elem = f16;" in code and "alias elem = f32;" not in code


def test_subgroup_block_is_cut_without_subgroups():
    full, cut = kernels.load("matmul"), kernels.load("matmul", subgroups=False)
    assert "matmul_sg32x4" in full.entries and "matmul_sg32x4" not in cut.entries
    assert "matmul_reg8x4" in cut.entries and "fn matmul_sg" not in cut.code


def test_wide_reads_declare_words_and_wrap_every_read():
    """matmul_cpu's wide build reads A and (elem) B as 64-bit words; the narrow build, f16 and other families
    keep their reads; packed weights stay packed beside a wide A."""
    narrow, wide = kernels.load("matmul_cpu"), kernels.load("matmul_cpu", wide_reads=True)
    assert "u64" not in registry._strip_comments(narrow.code) and "wide_quad" not in narrow.code
    assert [b.type for b in wide.bindings("matmul_cpu_nt32x4")][1:3] == ["array<vec2<u64>>", "array<vec2<u64>>"]
    body = registry._strip_comments(wide.code)
    assert not re.search(r"(?<!wide_quad\()\b[ab]\[", body), "a read of a or b is not wrapped"
    assert body.count("fn wide_quad(") == 1 and wide.entries.keys() == narrow.entries.keys()
    packed = kernels.load("matmul_cpu", weights="bf16", wide_reads=True).code
    assert "a: array<vec2<u64>>" in packed and "b: array<u32>" in packed
    assert "u64" not in registry._strip_comments(kernels.load("matmul_cpu", "f16", wide_reads=True).code)
    assert kernels.load("matmul", wide_reads=True).code == kernels.load("matmul").code


def test_wrapping_skips_comments_and_swizzles():
    code = "x = w[i[j]] + q.w[0]; // w[ in a comment\ny = w[k];"
    assert registry._wrap_reads(code, "w") == "x = wide_quad(w[i[j]]) + q.w[0]; // w[ in a comment\ny = wide_quad(w[k]);"
    with pytest.raises(ValueError, match="a read of 'w' does not close on its line"):
        registry._wrap_reads("x = w[i +\n 1];", "w")


def test_wide_reads_of_a_wrong_binding_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "KERNEL_DIR", tmp_path)
    (tmp_path / "typo.wgsl").write_text("// wide reads: nope\n@compute @workgroup_size(1) fn e() {}\n")
    with pytest.raises(ValueError, match="typo.wgsl: `// wide reads:` names 'nope', which is not a read-only"):
        kernels.load("typo", wide_reads=True)
    (tmp_path / "scalar.wgsl").write_text("alias elem = f32;\n// wide reads: x\n"
                                          "@group(0) @binding(0) var<storage, read> x: array<elem>;\n")
    with pytest.raises(ValueError, match="names 'x', declared array<elem>, not array<vec4<elem>>"):
        kernels.load("scalar", wide_reads=True)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no kernel family 'nope'"):
        kernels.load("nope")
    with pytest.raises(ValueError, match="elem must be one of"):
        kernels.load("matmul", "f64")
    with pytest.raises(ValueError, match="cannot be built for f16"):
        kernels.load("probe", "f16")
    with pytest.raises(ValueError, match="has no entry point 'nope'"):
        kernels.load("matmul").workgroup_size("nope")


def test_grids_follow_the_wgsl_workgroup_size(monkeypatch):
    """The ops' grids divide by the entry's @workgroup_size as the registry reads it, not by a copied number."""
    from wgrpo.engine.ops._common import flat_grid, row_grid

    source = parse("rows", "f32", "const SERIAL_WG: u32 = 32u;\n"
                                  "@compute @workgroup_size(SERIAL_WG) fn sum_serial() {}\n"
                                  "@compute @workgroup_size(128) fn sum_workgroup() {}\n")
    monkeypatch.setattr(kernels, "load", lambda family, elem="f32", subgroups=True, weights="elem", wide_reads=False: source)
    assert flat_grid("rows", "sum_workgroup", 129) == (2, 1)
    assert row_grid("rows", "sum_serial", 65) == (3, 1)  # one invocation per row, 32 per workgroup
    assert row_grid("rows", "sum_workgroup", 65) == (65, 1)  # one workgroup per row

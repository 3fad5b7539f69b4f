"""kernels/params.py: uniform struct layouts (checked against hand-computed offsets and against the GPU) and
packing by field name, with errors that name the kernel, the entry and the field."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from wgrpo import kernels
from wgrpo.kernels.params import ParamsError, ParamsLayout, parse_structs
from wgrpo.kernels.registry import parse

# Every rule of the uniform layout in one struct. Offsets by hand (WGSL spec, "Memory Layout"):
#   a u32 at 0; b vec2<f32> aligns to 8: 8..16; c vec3<u32> aligns to 16: 16..28; d f32 fits after it: 28;
#   e array<vec4<i32>, 2> aligns to 16: 32..64; f i32 at 64; g vec4<f32> at 80..96;
#   size: 96 rounded up to the struct's alignment 16 = 96. Then h u32 at 96 makes it 100, rounded to 112.
MIXED = """
struct Mixed {
    a: u32,
    b: vec2<f32>,
    c: vec3<u32>,
    d: f32,
    e: array<vec4<i32>, 2>,
    f: i32,
    g: vec4f,
    h: u32,
}
@group(0) @binding(0) var<uniform> mixed: Mixed;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
"""
MIXED_OFFSETS = {"a": 0, "b": 8, "c": 16, "d": 28, "e": 32, "f": 64, "g": 80, "h": 96}
MIXED_VALUES = {"a": 7, "b": (1.5, -2.0), "c": (1, 2, 3), "d": 0.25, "e": (-1, 2, -3, 4, 5, -6, 7, -8), "f": -9,
                "g": (0.5, 1.0, 2.0, 4.0), "h": 2**32 - 1}
# The WGSL expressions that read each scalar back, in memory order, as raw bits.
MIXED_READS = ["mixed.a", "bitcast<u32>(mixed.b.x)", "bitcast<u32>(mixed.b.y)", "mixed.c.x", "mixed.c.y", "mixed.c.z",
               "bitcast<u32>(mixed.d)"] + [f"bitcast<u32>(mixed.e[{i // 4}][{i % 4}])" for i in range(8)] + [
               "bitcast<u32>(mixed.f)"] + [f"bitcast<u32>(mixed.g.{c})" for c in "xyzw"] + ["mixed.h"]


def _mixed_layout(entry: str = "copy_out") -> ParamsLayout:
    code = MIXED + f"@compute @workgroup_size(1) fn {entry}() {{ out[0] = mixed.a; }}\n"
    return parse("test", "f32", code).params(entry)


def test_layout_matches_hand_computed_offsets():
    layout = _mixed_layout()
    assert layout.offsets == MIXED_OFFSETS
    assert layout.size == 112
    assert [(f.scalar, f.count) for f in layout.fields] == [
        ("u32", 0), ("f32", 2), ("u32", 3), ("f32", 0), ("i32", 8), ("i32", 0), ("f32", 4), ("u32", 0)]


def test_pack_puts_each_value_at_its_offset():
    data = _mixed_layout().pack(MIXED_VALUES)
    assert len(data) == 112
    assert struct.unpack_from("<I", data, 0) == (7,)
    assert struct.unpack_from("<2f", data, 8) == (1.5, -2.0)
    assert struct.unpack_from("<3I", data, 16) == (1, 2, 3)
    assert struct.unpack_from("<f", data, 28) == (0.25,)
    assert struct.unpack_from("<4i", data, 32) == (-1, 2, -3, 4)
    assert struct.unpack_from("<4i", data, 48) == (5, -6, 7, -8)  # the second vec4, 16 bytes on
    assert struct.unpack_from("<i", data, 64) == (-9,)
    assert struct.unpack_from("<4f", data, 80) == (0.5, 1.0, 2.0, 4.0)
    assert struct.unpack_from("<I", data, 96) == (2**32 - 1,)
    assert data[68:80] == bytes(12) and data[100:] == bytes(12)  # padding is zeros


def test_gpu_reads_the_packed_struct_as_packed(device):
    """naga's layout of the struct is ours: a shader copies every scalar it reads out, as bits."""
    import wgpu

    body = "\n".join(f"    out[{i}u] = {read};" for i, read in enumerate(MIXED_READS))
    code = MIXED + f"@compute @workgroup_size(1) fn copy_out() {{\n{body}\n}}\n"
    layout = parse("test", "f32", code).params("copy_out")
    data = layout.pack(MIXED_VALUES)
    gpu = device.wgpu
    uniform = gpu.create_buffer_with_data(data=data, usage=wgpu.BufferUsage.UNIFORM)
    out = gpu.create_buffer(size=4 * len(MIXED_READS), usage=wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC)
    pipeline = gpu.create_compute_pipeline(layout="auto", compute={
        "module": gpu.create_shader_module(code=code), "entry_point": "copy_out"})
    bind_group = gpu.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=[
        {"binding": 0, "resource": {"buffer": uniform, "offset": 0, "size": layout.size}},
        {"binding": 1, "resource": {"buffer": out, "offset": 0, "size": 4 * len(MIXED_READS)}}])
    encoder = gpu.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, bind_group)
    compute.dispatch_workgroups(1)
    compute.end()
    gpu.queue.submit([encoder.finish()])
    got = np.frombuffer(gpu.queue.read_buffer(out), np.uint32)
    expected = []
    for f in layout.fields:
        values = MIXED_VALUES[f.name] if f.count else (MIXED_VALUES[f.name],)
        code_ = {"u32": "I", "i32": "i", "f32": "f"}[f.scalar]
        expected += struct.unpack(f"<{len(values)}I", struct.pack(f"<{len(values)}{code_}", *values))
    np.testing.assert_array_equal(got, np.array(expected, np.uint32))


def test_real_kernels_layouts():
    broadcast = kernels.load("elementwise").params("add_naive")
    assert broadcast.struct == "BroadcastParams" and broadcast.size == 112
    assert broadcast.offsets == {"n": 0, "rank": 4, "dims": 16, "a_strides": 48, "b_strides": 80}
    rmsnorm = kernels.load("rmsnorm").params("rmsnorm_forward")
    assert rmsnorm.offsets == {"rows": 0, "n": 4, "eps": 8} and rmsnorm.size == 16  # 12 bytes, rounded up to 16
    assert kernels.load("sampling").params("sample_row").size == 64  # 13 scalars: 52 bytes, rounded up


def test_entries_of_one_family_bind_their_own_struct():
    source = kernels.load("elementwise")
    assert source.params("mul_naive").struct == "BroadcastParams"
    assert source.params("silu_naive").struct == "MapParams"
    assert source.params("silu_naive").offsets == {"n": 0, "alpha": 4, "beta": 8}
    clip = kernels.load("norm_clip")
    assert [clip.params(e).struct for e in ("sum_squares_workgroup", "clip_coef_workgroup", "clip_scale_naive")] == [
        "SumParams", "CoefParams", "ScaleParams"]


def test_short_arrays_are_padded_with_zeros():
    layout = kernels.load("elementwise").params("add_naive")
    data = layout.pack({"n": 6, "rank": 2, "dims": [2, 3], "a_strides": (3, 1), "b_strides": np.array([0, 1])})
    assert struct.unpack_from("<8I", data, 16) == (2, 3, 0, 0, 0, 0, 0, 0)
    assert struct.unpack_from("<8I", data, 80) == (0, 1, 0, 0, 0, 0, 0, 0)


RMSNORM = {"rows": 3, "n": 5, "eps": 1e-6}


@pytest.mark.parametrize("values, message", [
    ({"rows": 3, "n": 5}, r"rmsnorm\.rmsnorm_forward: params lack field\(s\) \['eps'\] of struct Params "
                          r"\{rows: u32, n: u32, eps: f32\}"),
    ({**RMSNORM, "epsilon": 1.0}, r"rmsnorm\.rmsnorm_forward: struct Params .* has no field\(s\) \['epsilon'\]"),
    ({**RMSNORM, "n": 5.0}, r"rmsnorm\.rmsnorm_forward: params field 'n' \(u32\) needs an integer, got 5\.0"),
    ({**RMSNORM, "rows": -1}, r"params field 'rows' \(u32\) needs an integer in \[0, 4294967296\), got -1"),
    ({**RMSNORM, "eps": "small"}, r"params field 'eps' \(f32\) needs a number, got 'small'"),
    ({**RMSNORM, "eps": 1e39}, r"params field 'eps' \(f32\) needs a value within f32's range"),
    (None, r"params lack field\(s\) \['rows', 'n', 'eps'\]"),
])
def test_mismatches_name_the_kernel_the_entry_and_the_field(values, message):
    layout = kernels.load("rmsnorm").params("rmsnorm_forward")
    with pytest.raises(ParamsError, match=message):
        layout.pack(values)


def test_array_mismatches_name_the_field():
    layout = kernels.load("elementwise").params("add_naive")
    good = {"n": 6, "rank": 1, "dims": [6], "a_strides": [1], "b_strides": [1]}
    with pytest.raises(ParamsError, match=r"elementwise\.add_naive: params field 'dims' .* holds 8 values, got 9"):
        layout.pack({**good, "dims": range(9)})
    with pytest.raises(ParamsError, match=r"params field 'a_strides' .* needs a sequence of at most 8 numbers, got 1"):
        layout.pack({**good, "a_strides": 1})
    with pytest.raises(ParamsError, match=r"params field 'b_strides' .* element 1 needs an integer, got 0\.5"):
        layout.pack({**good, "b_strides": [1, 0.5]})
    with pytest.raises(ParamsError, match=r"params field 'n' \(u32\) needs an integer, got \[6\]"):
        layout.pack({**good, "n": [6]})


def test_params_error_is_a_type_error():
    """As Python's own error for a missing or unexpected keyword argument."""
    assert issubclass(ParamsError, TypeError)


def test_flags_and_numpy_scalars_pack():
    layout = kernels.load("softmax").params("softmax_serial")
    data = layout.pack({"rows": np.int64(2), "n": np.uint32(9), "t_q": 1, "causal": True})
    assert struct.unpack("<4I", data) == (2, 9, 1, 1)


def test_unsupported_structs_are_refused_when_read():
    with pytest.raises(ValueError, match=r"array<f32, 4> cannot live in a uniform buffer"):
        parse("test", "f32", "struct P { v: array<f32, 4>, }\n@group(0) @binding(0) var<uniform> p: P;\n"
                             "@compute @workgroup_size(1) fn e() { let x = p.v[0]; }\n")
    with pytest.raises(ValueError, match=r"test.e: struct P, field 'm': type mat2x2<f32> is not supported"):
        parse("test", "f32", "struct P { m: mat2x2<f32>, }\n@group(0) @binding(0) var<uniform> p: P;\n"
                             "@compute @workgroup_size(1) fn e() { let x = p.m; }\n")


def test_parse_structs_splits_members_outside_angle_brackets():
    structs = parse_structs("struct A { x: u32, y: array<vec4<u32>, 2>, }\nstruct B { z: f32 }")
    assert structs == {"A": [("x", "u32"), ("y", "array<vec4<u32>, 2>")], "B": [("z", "f32")]}

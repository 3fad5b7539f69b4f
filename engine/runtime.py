"""Buffers, pipelines and command recording on one device.

Owns: the buffer pool (engine.pool), the pipeline cache keyed by (kernel, entry, element type, constants), and the
command encoder that collects every dispatch until the host needs a result. Ops call `dispatch`; nothing is
submitted until `flush` (a read-back flushes first), so a whole training step is one submit. Kernel parameters are
given by field name and packed by the layout the registry reads from the entry's WGSL uniform struct; those of all
dispatches in a submit live in one uniform arena written once per submit and bound with dynamic offsets, so bind
groups stay cacheable. Must not import `rl`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import wgpu

from wgrpo import kernels
from wgrpo.engine.device import Device
from wgrpo.engine.errors import InputError, SplitTensorError
from wgrpo.engine.memory import DeviceMemory
from wgrpo.engine.pool import Block, BufferPool

_PARAMS_ARENA_BYTES = 1 << 20
# Each dispatch's Params get one slot; 256 B is the largest uniform offset alignment WebGPU allows.
_PARAMS_SLOT_BYTES = 256
_BIND_GROUP_CACHE = 4096
WRITE_STAGING_BYTES = 64 << 20  # host writes staged by the queue before a submit hands them to the device


class KernelError(RuntimeError):
    """wgpu rejected a kernel, its bindings or its dispatch; the message names the kernel and the shapes."""


@dataclass(frozen=True)
class _Pipeline:
    """One compiled entry point: its storage bindings in binding order, its uniform binding (at most one) and
    the layout that packs its Params (None when it binds no uniform)."""

    pipeline: wgpu.GPUComputePipeline
    group_layout: wgpu.GPUBindGroupLayout
    storage: list[kernels.Binding]
    uniform: list[kernels.Binding]
    params: kernels.ParamsLayout | None


class Bindable(Protocol):
    def binding(self) -> tuple[Block, int, int]:
        """(block, byte offset, byte size) of the data to bind."""


@dataclass
class RuntimeStats:
    dispatches: int = 0
    submits: int = 0
    readbacks: int = 0
    pipelines: int = 0
    buffers_created: int = 0
    buffers_reused: int = 0
    bind_groups_created: int = 0


class Runtime:
    """Records dispatches on one device and submits them together."""

    def __init__(self, device: Device):
        self.device = device
        self._wgpu = device.wgpu
        self.stats = RuntimeStats()
        self.pool = BufferPool(self._wgpu, self.stats)
        self.memory = DeviceMemory()  # bytes of the tensors alive, by kind (engine.memory)
        self.epoch = 0  # number of the submit now being recorded
        self._pipelines: dict[tuple, _Pipeline] = {}
        self._bind_groups: OrderedDict[tuple, wgpu.GPUBindGroup] = OrderedDict()
        self._params_buffer = self._wgpu.create_buffer(
            size=_PARAMS_ARENA_BYTES, usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
        )
        self._params = bytearray()
        self._staged = 0  # bytes `write` has staged since the last submit
        self._encoder: wgpu.GPUCommandEncoder | None = None
        self._pass: wgpu.GPUComputePassEncoder | None = None
        self._recorded: list[str] = []  # what this submit holds, for error messages
        self._timed_pass: wgpu.GPUComputePassEncoder | None = None
        self.recorder = None  # engine.replay's recorder of the step being recorded for replay, if any
        self.profiler = None  # engine.profiler's KernelProfile while one is on: every dispatch in a timed pass

    # ---------------------------------------------------------------- pipelines

    def pipeline(self, kernel: str, entry: str, elem: str = "f32", constants: dict | None = None,
                 weights: str = "elem") -> _Pipeline:
        """The compiled entry point with its bind group layout, bindings and Params layout, built once.
        `weights` is the storage of the family's weight binding (see `kernels.load`)."""
        constants = dict(sorted((constants or {}).items()))
        wide_reads = self.device.wide_reads
        key = (kernel, entry, elem, tuple(constants.items()), weights, wide_reads)
        if key not in self._pipelines:
            if elem == "f16" and not self.device.has_f16:
                raise InputError(f"{kernel}.{entry}: f16 needs the shader-f16 feature, which {self.device.name} lacks")
            source = kernels.load(kernel, elem, self.device.has_subgroups, weights, wide_reads)
            bindings = source.bindings(entry)
            if any(b.group != 0 for b in bindings):
                raise KernelError(f"{kernel}.{entry}: only bind group 0 is supported")
            layout_entries = [
                {
                    "binding": b.binding,
                    "visibility": wgpu.ShaderStage.COMPUTE,
                    "buffer": {
                        "type": {
                            "uniform": wgpu.BufferBindingType.uniform,
                            "read": wgpu.BufferBindingType.read_only_storage,
                            "read_write": wgpu.BufferBindingType.storage,
                        }[b.kind],
                        "has_dynamic_offset": b.kind == "uniform",
                    },
                }
                for b in bindings
            ]
            try:
                module = self._wgpu.create_shader_module(label=f"{kernel}[{elem}]", code=source.code)
                group_layout = self._wgpu.create_bind_group_layout(label=f"{kernel}.{entry}", entries=layout_entries)
                layout = self._wgpu.create_pipeline_layout(bind_group_layouts=[group_layout])
                stage = {"module": module, "entry_point": entry}
                if constants:
                    stage["constants"] = constants
                pipeline = self._wgpu.create_compute_pipeline(label=f"{kernel}.{entry}", layout=layout, compute=stage)
            except Exception as error:  # wgpu reports shader and layout problems as several exception types
                raise KernelError(f"building {kernel}.{entry} ({elem}, constants {constants}) failed: {error}") from error
            self._pipelines[key] = _Pipeline(pipeline, group_layout, [b for b in bindings if b.kind != "uniform"],
                                             [b for b in bindings if b.kind == "uniform"], source.params(entry))
            self.stats.pipelines += 1
        return self._pipelines[key]

    # ---------------------------------------------------------------- recording

    def dispatch(
        self,
        kernel: str,
        entry: str,
        buffers: Sequence[Bindable],
        grid: tuple[int, ...],
        params: Mapping[str, object] | None = None,
        *,
        elem: str = "f32",
        constants: dict | None = None,
        shapes: str = "",
        weights: str = "elem",
    ) -> None:
        """Record one dispatch. `buffers` fill the entry's storage bindings in binding order; `params` gives the
        fields of the uniform struct the entry binds by name (`{"rows": r, "n": n, "eps": eps}`): a missing,
        unknown or mistyped field raises `kernels.ParamsError` naming the kernel, the entry and the field.
        `weights` ("elem", "bf16" or "f16") is how the family's weight binding is stored (see `kernels.load`)."""
        compiled = self.pipeline(kernel, entry, elem, constants, weights)
        what = f"{kernel}.{entry}({shapes})" if shapes else f"{kernel}.{entry}"
        storage = compiled.storage
        if len(buffers) != len(storage):
            raise KernelError(f"{what} binds {[b.name for b in storage]} but got {len(buffers)} buffers")
        if compiled.params is not None:
            data = compiled.params.pack(params)
        elif params:
            raise KernelError(f"{what} binds no uniform Params struct, but got params {sorted(params)}")
        else:
            data = b""
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        max_groups = self.device.limits.get("max-compute-workgroups-per-dimension", 65535)
        if max(grid) > max_groups or min(grid) < 0:
            raise InputError(f"{what}: grid {grid} exceeds the adapter's {max_groups} workgroups per dimension")
        if min(grid) == 0:
            return  # an empty tensor: nothing to compute
        if len(data) > _PARAMS_SLOT_BYTES:
            raise KernelError(f"{what}: params of {len(data)} bytes exceed the {_PARAMS_SLOT_BYTES}-byte slot")
        # before the bound blocks are stamped with this submit's epoch: stamped first, a flush would leave them
        # marked with the submit before the one that reads them, and an upload could overwrite one in between
        if len(self._params) + _PARAMS_SLOT_BYTES > _PARAMS_ARENA_BYTES or self._profile_room() < 1:
            self.flush()
        slices, blocks = [], []
        for binding, item in zip(storage, buffers):
            try:
                block, offset, nbytes = item.binding()
            except SplitTensorError as error:
                raise SplitTensorError(f"{what}: binding {binding.name!r}: {error}") from None
            if nbytes > self.device.max_binding_bytes:
                raise InputError(
                    f"{what}: binding {binding.name!r} needs {nbytes} bytes, over this adapter's "
                    f"max_storage_buffer_binding_size of {self.device.max_binding_bytes} bytes"
                )
            block.epoch = self.epoch
            blocks.append(block)
            # sized in whole 16-byte units, within the block: a kernel may read a binding as vec4s, whose last
            # partial one must lie inside it (offsets are 256-byte aligned and blocks 256-byte sized, so it fits);
            # the bytes past the tensor may belong to a neighbouring view, so every kernel bounds its own writes
            size = min(max(16, (nbytes + 15) & ~15), block.nbytes - offset)
            if size > self.device.max_binding_bytes:  # a limit that is no multiple of 16 (wgpu's 2 GiB - 1)
                size = max(4, (nbytes + 3) & ~3)
            slices.append((binding.binding, block.buffer, offset, size))
        params_offset = len(self._params)
        self._params += data + bytes(_PARAMS_SLOT_BYTES - len(data))

        uniform = compiled.uniform
        bind_group = self._bind_group(compiled.group_layout, uniform, slices)
        if self.recorder is not None:
            self.recorder.dispatch(compiled.pipeline, bind_group, id(compiled.group_layout), slices,
                                   [b.kind for b in storage], bool(uniform), data, grid, blocks, compiled.params)
        if self.profiler is None:
            compute_pass = self._compute_pass()
        else:
            compute_pass = self._profiled_pass(f"{kernel}.{entry}", shapes)
        try:
            compute_pass.set_pipeline(compiled.pipeline)
            compute_pass.set_bind_group(0, bind_group, [params_offset] if uniform else [])
            compute_pass.dispatch_workgroups(*grid)
        except Exception as error:
            raise KernelError(f"recording {what} with grid {grid} failed: {error}") from error
        if self.profiler is not None:
            self._end_pass()
        self.stats.dispatches += 1
        self._recorded.append(what)

    def replay(self, commands: Sequence[tuple], params: bytes, blocks: Sequence[Block], what: str) -> None:
        """Record `commands` again: (pipeline, bind group, binds a uniform, grid) each, the i-th with Params
        `params[i * slot : (i + 1) * slot]` (engine.replay builds them). `blocks` are the buffers they bind."""
        n = len(commands)
        if n * _PARAMS_SLOT_BYTES > _PARAMS_ARENA_BYTES:
            raise KernelError(f"replaying {what}: {n} dispatches do not fit one submit's Params arena")
        if len(params) != n * _PARAMS_SLOT_BYTES:
            raise KernelError(f"replaying {what}: {len(params)} bytes of Params for {n} dispatches")
        if len(self._params) + len(params) > _PARAMS_ARENA_BYTES or self._profile_room() < n:
            self.flush()
        if self._profile_room() < n:
            raise KernelError(f"profiling {what}: {n} dispatches do not fit one submit's timestamp queries")
        base = len(self._params)
        self._params += params
        compute_pass = self._compute_pass()
        try:
            for i, (pipeline, bind_group, has_uniform, grid) in enumerate(commands):
                if self.profiler is not None:
                    compute_pass = self._profiled_pass(pipeline.label, "replayed")
                compute_pass.set_pipeline(pipeline)
                compute_pass.set_bind_group(0, bind_group, [base + i * _PARAMS_SLOT_BYTES] if has_uniform else [])
                compute_pass.dispatch_workgroups(*grid)
                if self.profiler is not None:
                    self._end_pass()
        except Exception as error:
            raise KernelError(f"replaying {what} failed: {error}") from error
        for block in blocks:
            block.epoch = self.epoch
        self.stats.dispatches += n
        self._recorded.append(what)

    @staticmethod
    def params_slot_bytes() -> int:
        """Bytes of each dispatch's Params slot in the uniform arena."""
        return _PARAMS_SLOT_BYTES

    def _bind_group(self, group_layout, uniform, slices) -> wgpu.GPUBindGroup:
        key = (id(group_layout), tuple((n, id(buf), off, size) for n, buf, off, size in slices))
        cached = self._bind_groups.get(key)
        if cached is not None:
            self._bind_groups.move_to_end(key)
            return cached[0]
        entries = [
            {"binding": u.binding, "resource": {"buffer": self._params_buffer, "offset": 0, "size": _PARAMS_SLOT_BYTES}}
            for u in uniform
        ]
        entries += [{"binding": n, "resource": {"buffer": buf, "offset": off, "size": size}} for n, buf, off, size in slices]
        bind_group = self._wgpu.create_bind_group(layout=group_layout, entries=entries)
        self.stats.bind_groups_created += 1
        # The cached value holds the layout and buffers, so the ids in its key stay theirs.
        self._bind_groups[key] = (bind_group, group_layout, [s[1] for s in slices])
        if len(self._bind_groups) > _BIND_GROUP_CACHE:
            self._bind_groups.popitem(last=False)
        return bind_group

    def _command_encoder(self) -> wgpu.GPUCommandEncoder:
        if self._encoder is None:
            self._encoder = self._wgpu.create_command_encoder(label=f"wgrpo submit {self.epoch}")
        return self._encoder

    def _compute_pass(self, timestamp_writes: dict | None = None) -> wgpu.GPUComputePassEncoder:
        if self._pass is None or timestamp_writes is not None:
            self._end_pass()
            kwargs = {"timestamp_writes": timestamp_writes} if timestamp_writes else {}
            self._pass = self._command_encoder().begin_compute_pass(**kwargs)
        return self._pass

    def _profiled_pass(self, entry: str, shapes: str) -> wgpu.GPUComputePassEncoder:
        """A compute pass of its own for the next dispatch, its start and end timestamped for the profile."""
        self._end_pass()
        self._pass = self._command_encoder().begin_compute_pass(
            timestamp_writes=self.profiler.timestamp_writes(entry, shapes))
        return self._pass

    def _profile_room(self) -> int | float:
        """Dispatches the profile can still time in this submit (unbounded while none is on)."""
        return float("inf") if self.profiler is None else self.profiler.room

    def _end_pass(self) -> None:
        if self._timed_pass is not None and self._pass is self._timed_pass:
            raise KernelError("a timed pass would end early: copies, submits and read-backs cannot happen inside "
                              "timed_pass (record fewer dispatches, or copy outside it)")
        if self._pass is not None:
            self._pass.end()
            self._pass = None

    @contextlib.contextmanager
    def timed_pass(self, query_set: wgpu.GPUQuerySet, begin_index: int, end_index: int):
        """Dispatches recorded inside go into one compute pass whose start and end write GPU timestamps.

        Anything that would end that pass early (a copy, a submit, a read-back) raises instead of silently
        timing only part of the work."""
        self._compute_pass({"query_set": query_set, "beginning_of_pass_write_index": begin_index,
                            "end_of_pass_write_index": end_index})
        self._timed_pass = self._pass
        try:
            yield
        finally:
            self._timed_pass = None
            self._end_pass()

    def encoder(self) -> wgpu.GPUCommandEncoder:
        """The open command encoder, for commands outside compute passes (copies, query resolves)."""
        self._end_pass()
        return self._command_encoder()

    def copy(self, source: Bindable, destination: Bindable) -> None:
        """Record a buffer-to-buffer copy of `source`'s bytes."""
        src, src_offset, nbytes = source.binding()
        dst, dst_offset, dst_bytes = destination.binding()
        if dst_bytes < nbytes:
            raise ValueError(f"copy of {nbytes} bytes into a destination of {dst_bytes} bytes")
        src.epoch = dst.epoch = self.epoch
        if self.recorder is not None:
            self.recorder.refuse("a buffer copy")
        self.encoder().copy_buffer_to_buffer(src.buffer, src_offset, dst.buffer, dst_offset, (nbytes + 3) & ~3)

    # ---------------------------------------------------------------- submit and host transfers

    def flush(self) -> None:
        """Submit everything recorded so far, in one command buffer."""
        if self._encoder is None:
            return
        self._end_pass()
        recorded, self._recorded = self._recorded, []
        profiled = self.profiler.resolve(self._encoder) if self.profiler is not None else 0
        try:
            if self._params:
                self._wgpu.queue.write_buffer(self._params_buffer, 0, bytes(self._params))
            self._wgpu.queue.submit([self._encoder.finish()])
            self._staged = 0  # the queue's staged host writes went with it
            if profiled:
                self.profiler.collect(self._wgpu.queue)
        except Exception as error:
            tail = ", ".join(recorded[-5:])
            raise KernelError(f"submitting {len(recorded)} dispatches failed (the last: {tail}): {error}") from error
        finally:
            self._encoder = None
            self._params = bytearray()
            self.epoch += 1
        self.stats.submits += 1

    def upload(self, data: bytes) -> Block:
        """A block holding `data`, written by the queue before the next submit's commands."""
        nbytes = len(data)
        if self.recorder is not None:
            self.recorder.refuse("a host upload")
        block = self.pool.acquire(nbytes, writable_before=self.epoch)
        if nbytes:
            if nbytes % 4:  # writes are whole 32-bit words; pad only then, so large uploads are not copied
                data = bytes(data) + bytes(-nbytes % 4)
            self._wgpu.queue.write_buffer(block.buffer, 0, data)
        return block

    def write(self, block: Block, offset: int, data) -> None:
        """Write `data` (whole 32-bit words at a 4-byte offset) into `block` at `offset`, after every command
        recorded so far (submitted first, so none of them sees the new bytes): new weights into a model's own
        buffers, with no second copy on the device. The queue stages host writes until its next submit, so a
        submit goes out every WRITE_STAGING_BYTES to bound the staging memory."""
        nbytes = len(data)
        if offset % 4 or nbytes % 4:
            raise ValueError(f"Runtime.write: offset {offset} and size {nbytes} must be multiples of 4 bytes")
        if self.recorder is not None:
            self.recorder.refuse("a host write")
        if not nbytes:
            return
        self.flush()
        self._wgpu.queue.write_buffer(block.buffer, offset, data)
        block.epoch = self.epoch
        self._staged += nbytes
        if self._staged >= WRITE_STAGING_BYTES:
            self._wgpu.queue.submit([])
            self.stats.submits += 1
            self._staged = 0

    def read(self, block: Block, offset: int, nbytes: int) -> memoryview:
        """Flush, then copy `nbytes` at `offset` of `block` back to the host."""
        self.flush()
        if self.recorder is not None:
            self.recorder.refuse("a read-back")
        self.stats.readbacks += 1
        if nbytes == 0:
            return memoryview(b"")
        padded = (nbytes + 3) & ~3
        data = self._wgpu.queue.read_buffer(block.buffer, offset, padded)
        return memoryview(data).cast("B")[:nbytes]

    def trim(self) -> int:
        """Give the pool's free buffers back to the device (between models, or phases of very different sizes);
        returns the bytes freed. Waits for the GPU first, and forgets cached bind groups, which may name them."""
        self.synchronize()
        self._bind_groups.clear()
        return self.pool.trim()

    def synchronize(self) -> None:
        """Wait until the GPU has finished all submitted work (a 4-byte read-back: see DESIGN.md)."""
        self.flush()
        if self.recorder is not None:
            self.recorder.refuse("a wait for the GPU")
        self._wgpu.queue.read_buffer(self._params_buffer, 0, 4)

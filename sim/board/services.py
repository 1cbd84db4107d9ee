"""pynq's remote-device services, implemented on a :class:`VirtualBoard`.

The servicers subclass the classes pynq generated from its own .proto files (pynq.remote.*_pb2_grpc)
and answer with its own message classes, so the protocol is the installed client's, not a copy of it.
Errors reach the client the way it reads them: in the ``msg`` field where the client checks one, as a
gRPC status (which the client raises) where it does not.
"""
from __future__ import annotations

import itertools
import logging

import grpc
from pynq.remote import (buffer_pb2, buffer_pb2_grpc, gpio_pb2, gpio_pb2_grpc, mmio_pb2, mmio_pb2_grpc,
                         remote_device_pb2, remote_device_pb2_grpc)

from .board import VirtualBoard

log = logging.getLogger(__name__)

CHUNK = 2 << 20  # bytes per streamed message, as the client sends them


def _fail(context, code: grpc.StatusCode, e: Exception):
    log.warning("%s: %s", code.name, e)
    context.abort(code, str(e))


class DeviceService(remote_device_pb2_grpc.RemoteDeviceServicer):
    """Files (the client reads /proc, writes /lib/firmware and the FPGA manager) and bitstream attributes."""

    def __init__(self, board: VirtualBoard):
        self.board = board

    def existsfile(self, request, context):
        return remote_device_pb2.ExistsFileResponse(exists=request.file_path in self.board.files)

    def readfile(self, request, context):
        try:
            data = self.board.read_file(request.file_path)
        except FileNotFoundError:
            _fail(context, grpc.StatusCode.NOT_FOUND, FileNotFoundError(f"no such file: {request.file_path}"))
        for i in range(0, max(len(data), 1), CHUNK):
            yield remote_device_pb2.ReadFileResponse(data=data[i:i + CHUNK])

    def writefile(self, request_iterator, context):
        path, data = None, bytearray()
        for req in request_iterator:
            path = path or req.file_path
            data += req.data
        try:
            with self.board.lock:
                self.board.write_file(path, bytes(data))
        except Exception as e:  # programming failed: the client must not carry on with a dead fabric
            _fail(context, grpc.StatusCode.FAILED_PRECONDITION, e)
        return remote_device_pb2.WriteFileResponse()

    def set_bitstream_attrs(self, request, context):
        return remote_device_pb2.SetBitstreamAttrsResponse(status=True)

    def download(self, request_iterator, context):
        data = b"".join(r.buffer for r in request_iterator)
        try:
            with self.board.lock:
                self.board.files["/lib/firmware/download.bin"] = data
                self.board.program("download.bin")
        except Exception as e:
            _fail(context, grpc.StatusCode.FAILED_PRECONDITION, e)
        return remote_device_pb2.DownloadResponse(status=True)

    def set_pl_clk(self, request, context):
        return remote_device_pb2.SetPlClkResponse(status=True)

    def shutdown(self, request, context):
        return remote_device_pb2.ShutdownResponse(status=True)


class MmioService(mmio_pb2_grpc.MmioServicer):
    """Register windows: the kernel's AXI4-Lite registers, PS registers elsewhere."""

    def __init__(self, board: VirtualBoard):
        self.board = board
        self.windows: dict[str, tuple[int, int]] = {}
        self._ids = itertools.count(1)

    def get_mmio(self, request, context):
        mmio_id = f"mmio{next(self._ids)}"
        self.windows[mmio_id] = (request.base_addr, request.length)
        return mmio_pb2.GetMmioResponse(status=True, mmio_id=mmio_id)

    def _addr(self, mmio_id: str, offset: int, length: int) -> int:
        if mmio_id not in self.windows:
            raise ValueError(f"unknown MMIO window {mmio_id!r}")
        base, size = self.windows[mmio_id]
        if offset + length > size:
            raise ValueError(f"offset {offset:#x} + {length} is outside the {size:#x}-byte MMIO window at {base:#x}")
        return base + offset

    def read(self, request, context):
        try:
            addr = self._addr(request.mmio_id, request.offset, request.length)
            words = [self.board.reg_read(addr + 4 * k) for k in range(max(request.length // 4, 1))]
            if request.length == 8 and request.word_order == "big":
                words.reverse()
            value = sum(w << (32 * k) for k, w in enumerate(words))
            if request.length < 4:
                value &= (1 << (8 * request.length)) - 1
            return mmio_pb2.ReadResponse(status=True, data=value)
        except Exception as e:
            return mmio_pb2.ReadResponse(status=False, msg=str(e))

    def write(self, request, context):
        try:
            addr = self._addr(request.mmio_id, request.offset, len(request.data))
            for k in range(len(request.data) // 4):
                self.board.reg_write(addr + 4 * k, int.from_bytes(request.data[4 * k:4 * k + 4], "little"))
            return mmio_pb2.WriteResponse(status=True)
        except Exception as e:
            return mmio_pb2.WriteResponse(status=False, msg=str(e))


class BufferService(buffer_pb2_grpc.RemoteBufferServicer):
    """Contiguous buffers in the board's DDR; writes and reads stream whole buffers (or [start, end))."""

    def __init__(self, board: VirtualBoard):
        self.board = board

    def _buf(self, buffer_id: str, context):
        try:
            return self.board.memory.get(buffer_id)
        except Exception as e:
            _fail(context, grpc.StatusCode.NOT_FOUND, e)

    def allocate(self, request, context):
        try:
            with self.board.lock:
                buf = self.board.memory.allocate(request.size)
        except Exception as e:
            _fail(context, grpc.StatusCode.RESOURCE_EXHAUSTED, e)
        return buffer_pb2.AllocateResponse(buffer_id=buf.id)

    def write(self, request_iterator, context):
        buf, start, data = None, 0, bytearray()
        for req in request_iterator:
            if buf is None:
                buf = self._buf(req.buffer_id, context)
                start = req.start
            data += req.data
        if buf is None:
            return buffer_pb2.BufferWriteResponse()
        if start + len(data) > buf.data.size:
            return buffer_pb2.BufferWriteResponse(msg=f"{len(data)} bytes at {start} overflow the "
                                                      f"{buf.data.size}-byte buffer {buf.id}")
        with self.board.lock:
            old = buf.data.tobytes()
            buf.data[start:start + len(data)] = memoryview(bytes(data))
            if self.board.kernel is not None:
                self.board.kernel.host_wrote(buf, old)
        return buffer_pb2.BufferWriteResponse()

    def read(self, request, context):
        buf = self._buf(request.buffer_id, context)
        with self.board.lock:
            if self.board.kernel is not None:
                self.board.kernel.host_reads(buf)
            end = request.end or buf.data.size
            data = buf.data[request.start:end].tobytes()
        for i in range(0, max(len(data), 1), CHUNK):
            yield buffer_pb2.BufferReadResponse(data=data[i:i + CHUNK])

    def flush(self, request, context):
        self._buf(request.buffer_id, context)
        return buffer_pb2.FlushResponse()

    def invalidate(self, request, context):
        self._buf(request.buffer_id, context)
        return buffer_pb2.InvalidateResponse()

    def physical_address(self, request, context):
        return buffer_pb2.AddressResponse(address=self._buf(request.buffer_id, context).addr)

    def virtual_address(self, request, context):
        return buffer_pb2.AddressResponse(address=self._buf(request.buffer_id, context).addr)

    def cacheable(self, request, context):
        self._buf(request.buffer_id, context)
        return buffer_pb2.CacheableResponse(cacheable=True)

    def freebuffer(self, request, context):
        try:
            with self.board.lock:
                self.board.memory.free(request.buffer_id)
        except Exception as e:
            return buffer_pb2.FreeBufferResponse(msg=str(e))
        return buffer_pb2.FreeBufferResponse()


class GpioService(gpio_pb2_grpc.GpioServicer):
    """PS GPIO pins: remembered values (the flightc kernel uses none)."""

    def __init__(self, board: VirtualBoard):
        self.pins: dict[str, int] = {}
        self._ids = itertools.count(1)

    def get_gpio(self, request, context):
        gpio_id = f"gpio{next(self._ids)}"
        self.pins[gpio_id] = 0
        return gpio_pb2.GetGpioResponse(gpio_id=gpio_id)

    def read(self, request, context):
        return gpio_pb2.GpioReadResponse(value=self.pins.get(request.gpio_id, 0))

    def write(self, request, context):
        self.pins[request.gpio_id] = request.value
        return gpio_pb2.GpioWriteResponse()

    def unexport(self, request, context):
        self.pins.pop(request.gpio_id, None)
        return gpio_pb2.GpioUnexportResponse()

    def is_exported(self, request, context):
        return gpio_pb2.GpioIsExportedResponse(is_exported=request.gpio_id in self.pins)

    def get_gpio_base_path(self, request, context):
        return gpio_pb2.GetGpioBasePathResponse(base_path="/sys/class/gpio/gpiochip0/")

    def get_gpio_npins(self, request, context):
        return gpio_pb2.GetGpioNPinsResponse(npins=174)


SERVICES = ((DeviceService, remote_device_pb2_grpc.add_RemoteDeviceServicer_to_server),
            (MmioService, mmio_pb2_grpc.add_MmioServicer_to_server),
            (BufferService, buffer_pb2_grpc.add_RemoteBufferServicer_to_server),
            (GpioService, gpio_pb2_grpc.add_GpioServicer_to_server))

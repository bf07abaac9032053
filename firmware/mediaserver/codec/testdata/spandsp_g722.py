# Runs libspandsp's G.722 (the codec baresip's g722 module uses) on raw
# little-endian 16-bit PCM or G.722 octets, for the bit-exactness test of
# firmware/mediaserver/codec. Usage: spandsp_g722.py enc|dec IN OUT
import ctypes
import sys

lib = ctypes.CDLL("libspandsp.so.2")
lib.g722_encode_init.restype = ctypes.c_void_p
lib.g722_decode_init.restype = ctypes.c_void_p
lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]

mode, src, dst = sys.argv[1:4]
data = open(src, "rb").read()
if mode == "enc":
    count = len(data) // 2
    pcm = (ctypes.c_int16 * count).from_buffer_copy(data[: 2 * count])
    state = lib.g722_encode_init(None, 64000, 0)  # 64 kbit/s, 16 kHz, unpacked
    out = ctypes.create_string_buffer(count)
    n = lib.g722_encode(state, out, pcm, count)
    open(dst, "wb").write(out.raw[:n])
elif mode == "dec":
    state = lib.g722_decode_init(None, 64000, 0)
    out = (ctypes.c_int16 * (2 * len(data)))()
    n = lib.g722_decode(state, out, data, len(data))
    open(dst, "wb").write(bytes(out)[: 2 * n])
else:
    sys.exit("mode must be enc or dec")

# Runs CPython's audioop G.711 (an independent C implementation) for the
# G.711 cross-check of firmware/mediaserver/codec: reads every 16-bit
# input (little-endian) and every code byte, writes ulaw, alaw encodings
# of the inputs and the 16-bit decodings of the codes.
# Usage: audioop_g711.py PCM CODES OUT
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import audioop  # noqa: E402  (Python <= 3.12)

pcm = open(sys.argv[1], "rb").read()
codes = open(sys.argv[2], "rb").read()
with open(sys.argv[3], "wb") as out:
    out.write(audioop.lin2ulaw(pcm, 2))
    out.write(audioop.lin2alaw(pcm, 2))
    out.write(audioop.ulaw2lin(codes, 2))
    out.write(audioop.alaw2lin(codes, 2))

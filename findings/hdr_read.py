# Independent reader of an HdrHistogram V2 interval log (compressed, base64), per the spec
# (HdrHistogram's HistogramLogReader / EncodableHistogram). Prints each interval's total count,
# max, and the log's header/tag lines; checks the "max" column against the decoded max.
import sys, base64, zlib, struct, math
def zz(buf, i):
    v = 0; shift = 0
    while True:
        b = buf[i]; i += 1
        v |= (b & 0x7f) << shift; shift += 7
        if not (b & 0x80) or shift >= 63:
            if shift >= 63 and (b & 0x80): v |= buf[i] << 63; i += 1
            break
    return (v >> 1) ^ -(v & 1), i
def decode(b64):
    raw = base64.b64decode(b64)
    cookie, clen = struct.unpack('>ii', raw[:8])
    # Java's HistogramLogReader (decodeFromCompressedByteBuffer) accepts only the compressed
    # cookie base 0x1c849304 (| word-size bits 0x10): anything else throws "The buffer does not
    # contain a compressed Histogram". HdrHistogram_c and Python hdrh do the same.
    if cookie & ~0xf0 != 0x1c849304:
        STRICT_FAIL.append(hex(cookie))
        body = raw   # lenient: an uncompressed V2 encoding, decode it anyway
    else:
        body = zlib.decompress(raw[8:8+clen])
    cookie2, plen, noff, sig, lo, hi, conv = struct.unpack('>iiiiqqd', body[:40])
    assert cookie2 & ~0xf0 == 0x1c849303, hex(cookie2)
    payload = body[40:40+plen]
    # bucket layout
    largest = 2 * 10**sig
    sub_bucket_count_magnitude = int(math.ceil(math.log2(largest)))
    sub_bucket_half_count_magnitude = max(sub_bucket_count_magnitude, 1) - 1
    sub_bucket_count = 1 << (sub_bucket_half_count_magnitude + 1)
    sub_bucket_half_count = sub_bucket_count // 2
    unit_mag = int(math.floor(math.log2(lo)))
    counts = []
    i = 0
    while i < len(payload):
        v, i = zz(payload, i)
        if v < 0: counts.extend([0] * (-v))
        else: counts.append(v)
    total = 0; mx = 0
    for idx, c in enumerate(counts):
        if not c: continue
        total += c
        bucket = (idx >> sub_bucket_half_count_magnitude) - 1
        sub = (idx & (sub_bucket_half_count - 1)) + sub_bucket_half_count
        if bucket < 0: sub -= sub_bucket_half_count; bucket = 0
        val = sub << (bucket + unit_mag)
        # highest equivalent value
        size = 1 << (unit_mag + bucket + (1 if sub >= sub_bucket_count else 0))
        mx = max(mx, val + size - 1)
    return total, mx, (sig, lo, hi)
STRICT_FAIL = []
grand = 0
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    if line.startswith('#') or line.startswith('"StartTimestamp"'):
        print('H', line); continue
    parts = line.split(',')
    if parts[0].startswith('Tag='): parts = parts[1:]
    start, length, maxcol, b64 = parts
    total, mx, meta = decode(b64)
    grand += total
    print('I start=%s len=%s maxcol=%s decoded_count=%d decoded_max_us=%d meta=%s' % (start, length, maxcol, total, mx, meta))
print('TOTAL', grand)
if STRICT_FAIL:
    print('NOT READABLE BY HdrHistogram log readers: %d intervals with non-compressed cookie %s' % (len(STRICT_FAIL), STRICT_FAIL[0]))
    sys.exit(1)

# Reads an HdrHistogram interval log with the official Python reader (`hdrh`, pip package
# `hdrhistogram`) and prints the total count of the intervals it decoded. Exit 77: hdrh is not
# installed (the caller skips loudly); any decoding failure is an exception (non-zero exit).
import sys
try:
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader
except ImportError:
    sys.exit(77)
ref = HdrHistogram(1, 24 * 3600 * 1000 * 1000, 2)
reader = HistogramLogReader(sys.argv[1], ref)
intervals = total = 0
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    intervals += 1
    total += h.get_total_count()
print(intervals, total)

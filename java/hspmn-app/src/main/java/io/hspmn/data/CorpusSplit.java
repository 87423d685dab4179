package io.hspmn.data;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * One side of a split: document slices read as one byte stream, in corpus order. Training windows
 * may run across a document boundary, as when text files are concatenated; they never leave the split.
 */
public final class CorpusSplit {
    private final String name;
    private final List<MemorySegment> parts;
    private final long[] starts; // starts[i]: stream offset of parts[i]; starts[parts.size()] = size
    private long[] histogram;

    CorpusSplit(String name, List<MemorySegment> parts) {
        this.name = name;
        this.parts = Collections.unmodifiableList(parts);
        this.starts = new long[parts.size() + 1];
        for (int i = 0; i < parts.size(); i++) {
            starts[i + 1] = starts[i] + parts.get(i).byteSize();
        }
    }

    /** "train" or "validation". */
    public String name() {
        return name;
    }

    /** Bytes in the stream. */
    public long size() {
        return starts[starts.length - 1];
    }

    /** The document slices, in stream order (read-only mappings). */
    public List<MemorySegment> parts() {
        return parts;
    }

    /** Copies {@code len} bytes from stream offset {@code offset} into {@code dst[dstOff..]}. */
    public void copy(long offset, byte[] dst, int dstOff, int len) {
        if (offset < 0 || len < 0 || offset > size() - len) {
            throw new IndexOutOfBoundsException("bytes [" + offset + ", " + offset + "+" + len + ") of a " + size() + "-byte " + name + " split");
        }
        int p = Arrays.binarySearch(starts, offset);
        p = p >= 0 ? p : -p - 2;
        while (len > 0) {
            while (starts[p + 1] <= offset) {
                p++; // skip parts that end at offset
            }
            long in = offset - starts[p];
            int n = (int) Math.min(len, starts[p + 1] - offset);
            MemorySegment.copy(parts.get(p), ValueLayout.JAVA_BYTE, in, dst, dstOff, n);
            offset += n;
            dstOff += n;
            len -= n;
        }
    }

    /** Count of each byte value over the split (computed once). */
    public long[] byteHistogram() {
        if (histogram == null) {
            long[] h = new long[256];
            byte[] buf = new byte[1 << 16];
            for (long off = 0; off < size(); off += buf.length) {
                int n = (int) Math.min(buf.length, size() - off);
                copy(off, buf, 0, n);
                for (int i = 0; i < n; i++) {
                    h[buf[i] & 0xFF]++;
                }
            }
            histogram = h;
        }
        return histogram.clone();
    }

    /**
     * Entropy of the split's byte distribution, in bits per byte: the loss of the best model that
     * ignores context, so the bar a language model's bits per byte must clear. 0 for an empty split.
     */
    public double unigramEntropyBits() {
        long[] h = byteHistogram();
        double n = size();
        double bits = 0;
        for (long c : h) {
            if (c > 0) {
                double p = c / n;
                bits -= p * Math.log(p);
            }
        }
        return bits / Math.log(2);
    }

    /**
     * Bits per byte of this split under the unigram model fitted on {@code fitted} (add-one smoothed,
     * so a byte {@code fitted} never shows costs log2(n + 256) bits instead of infinity): the bar for
     * a model trained on {@code fitted} and measured on this split, as a held-out unigram model sees it.
     */
    public double unigramCrossEntropyBits(CorpusSplit fitted) {
        long[] mine = byteHistogram();
        long[] theirs = fitted.byteHistogram();
        double denominator = fitted.size() + 256.0;
        double bits = 0;
        for (int b = 0; b < 256; b++) {
            if (mine[b] > 0) {
                bits -= mine[b] * Math.log((theirs[b] + 1) / denominator);
            }
        }
        return size() == 0 ? 0 : bits / size() / Math.log(2);
    }

    @Override
    public String toString() {
        return "CorpusSplit[" + name + ", " + parts.size() + " parts, " + size() + " bytes]";
    }
}

package io.hspmn.data;

import org.junit.jupiter.api.Test;

import java.util.BitSet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class WindowPermutationTest {
    @Test
    void isAPermutationForEverySizeUpTo600() {
        for (int n = 1; n <= 600; n++) {
            WindowPermutation p = new WindowPermutation(n, 12345L * n);
            BitSet seen = new BitSet(n);
            for (int i = 0; i < n; i++) {
                long j = p.apply(i);
                assertTrue(j >= 0 && j < n, "n=" + n + ": " + i + " -> " + j);
                seen.set((int) j);
            }
            assertEquals(n, seen.cardinality(), "n=" + n);
        }
    }

    @Test
    void isAPermutationOfALargeOddSize() {
        int n = 1_000_003;
        WindowPermutation p = new WindowPermutation(n, 7);
        BitSet seen = new BitSet(n);
        int fixed = 0;
        for (int i = 0; i < n; i++) {
            int j = (int) p.apply(i);
            seen.set(j);
            fixed += j == i ? 1 : 0;
        }
        assertEquals(n, seen.cardinality());
        assertTrue(fixed < 20, "a shuffle leaves about one element in place, not " + fixed);
    }

    @Test
    void dependsOnTheKey() {
        WindowPermutation a = new WindowPermutation(1000, 1);
        WindowPermutation b = new WindowPermutation(1000, 2);
        int same = 0;
        for (int i = 0; i < 1000; i++) {
            same += a.apply(i) == b.apply(i) ? 1 : 0;
        }
        assertTrue(same < 20, same + " of 1000 positions agree under different keys");
        assertEquals(a.apply(17), new WindowPermutation(1000, 1).apply(17));
        assertNotEquals(a.apply(0) + a.apply(1) * 1000, b.apply(0) + b.apply(1) * 1000);
    }

    @Test
    void refusesOutOfRange() {
        assertThrows(IndexOutOfBoundsException.class, () -> new WindowPermutation(5, 0).apply(5));
        assertThrows(IllegalArgumentException.class, () -> new WindowPermutation(0, 0));
    }
}

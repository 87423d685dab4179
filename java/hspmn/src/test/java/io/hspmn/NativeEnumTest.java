package io.hspmn;

import io.hspmn.ffi.hspmn_h;
import org.junit.jupiter.api.Test;

import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Each Java mirror of a C enum holds the header's constants, in the header's order (code == ordinal). */
class NativeEnumTest {

    /** The header's constants whose names start with {@code prefix}, by name, as the bindings give them. */
    private static Map<String, Integer> headerConstants(String prefix) throws ReflectiveOperationException {
        Map<String, Integer> out = new TreeMap<>();
        for (Method m : hspmn_h.class.getMethods()) {
            if (m.getName().startsWith(prefix) && m.getParameterCount() == 0 && m.getReturnType() == int.class
                    && Modifier.isStatic(m.getModifiers())) {
                out.put(m.getName(), (Integer) m.invoke(null));
            }
        }
        return out;
    }

    private static <E extends Enum<E> & NativeEnum> void assertMirrors(Class<E> type, String prefix,
            Function<E, String> cName) throws ReflectiveOperationException {
        Map<String, Integer> javaSide = new TreeMap<>();
        for (E e : type.getEnumConstants()) {
            javaSide.put(cName.apply(e), e.code());
        }
        assertEquals(headerConstants(prefix), javaSide, type.getSimpleName() + " against hspmn.h");
    }

    @Test
    void everyMirrorMatchesTheHeader() throws ReflectiveOperationException {
        assertMirrors(Backend.class, "HSPMN_BACKEND_", e -> "HSPMN_BACKEND_" + e.name());
        assertMirrors(DType.class, "HSPMN_DTYPE_", e -> "HSPMN_DTYPE_" + e.name());
        assertMirrors(MemoryKind.class, "HSPMN_MEMORY_", e -> "HSPMN_MEMORY_" + e.name());
        assertMirrors(Routing.class, "HSPMN_ROUTING_", e -> "HSPMN_ROUTING_" + e.name());
        assertMirrors(NanPolicy.class, "HSPMN_NAN_", e -> "HSPMN_NAN_" + e.name());
        Map<String, Integer> statuses = headerConstants("HSPMN_ERR_");
        statuses.putAll(headerConstants("HSPMN_OK"));
        Map<String, Integer> javaStatuses = new TreeMap<>();
        for (Status s : Status.values()) {
            javaStatuses.put(s == Status.OK ? "HSPMN_OK" : "HSPMN_ERR_" + s.name(), s.code());
        }
        assertEquals(statuses, javaStatuses, "Status against hspmn.h");
    }

    @Test
    void momentCodesAreTheWhichOfGetMoment() {
        // hspmn.h: hspmn_model_get_moment's which is 0 = m, 1 = v (a parameter, not a C enum).
        assertEquals(0, Moment.M.code());
        assertEquals(1, Moment.V.code());
        assertEquals(2, Moment.values().length);
    }

    @Test
    void codesRoundTripAndUnknownCodesAreRefused() {
        for (DType d : DType.values()) {
            assertEquals(d, DType.of(d.code()));
        }
        assertEquals(Backend.AUTO, Backend.of(2));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MemoryKind.of(3));
        assertEquals("unknown hspmn_memory 3", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Routing.of(-1));
        assertEquals(Status.INTERNAL, Status.of(99), "a newer library's status maps to INTERNAL");
        assertEquals(Status.INTERNAL, Status.of(-1));
    }
}

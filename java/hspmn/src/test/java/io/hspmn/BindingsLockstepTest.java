package io.hspmn;

import io.hspmn.ffi.hspmn_h;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.AddressLayout;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.GroupLayout;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.PaddingLayout;
import java.lang.foreign.SequenceLayout;
import java.lang.foreign.ValueLayout;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The generated (jextract-layout) bindings and hspmn.h must not drift apart. ci/bindings.sh --check (in .ci/run)
 * proves the committed files are what the generator makes of the header; this test, with a parser of its own,
 * also catches a header edited without regenerating in a plain mvn verify, checks the generator's output
 * independently of it, and checks what the generator cannot: that the built library exports every function.
 * Every HSPMN_API function has
 * a binding with the same name and a FunctionDescriptor that matches the C signature, every binding names a
 * header function, the loaded library exports every function, struct layouts follow the header's fields and
 * C's natural alignment, and every enum constant and #define has the header's value.
 */
class BindingsLockstepTest {

    /**
     * Asking a binding for its descriptor initialises its holder class, which resolves the symbol: the library
     * must be loaded first (a holder that failed to initialise stays failed for the life of the JVM).
     */
    @BeforeAll
    static void loadLibrary() {
        NativeLibrary.ensureLoaded();
    }

    /** A C header reduced to what the ABI check needs. */
    record Header(Map<String, Function> functions, Map<String, List<Field>> structs, Map<String, Long> constants,
                  Set<String> enums) {
    }

    record Function(String name, String returnType, List<String> paramTypes) {
    }

    record Field(String type, String name, long count) {
    }

    static Path headerPath() {
        String p = System.getProperty("hspmn.test.header");
        return Path.of(p != null ? p : "../../native/include/hspmn.h");
    }

    static Header parse(String text) {
        String src = text.replaceAll("(?s)/\\*.*?\\*/", " ").replaceAll("//[^\\n]*", " ");
        Map<String, Long> constants = new LinkedHashMap<>();
        Matcher def = Pattern.compile("(?m)^\\s*#\\s*define\\s+(HSPMN_\\w+)\\s+(-?\\d+)\\s*$").matcher(src);
        while (def.find()) {
            constants.put(def.group(1), Long.parseLong(def.group(2)));
        }
        src = src.replaceAll("(?m)^\\s*#.*$", " ");
        Set<String> enums = new TreeSet<>();
        Matcher en = Pattern.compile("(?s)typedef\\s+enum\\s+(\\w+)\\s*\\{(.*?)\\}\\s*(\\w+)\\s*;").matcher(src);
        while (en.find()) {
            enums.add(en.group(1));
            enums.add(en.group(3));
            long next = 0;
            for (String item : en.group(2).split(",")) {
                String t = item.trim();
                if (t.isEmpty()) {
                    continue;
                }
                String[] kv = t.split("=");
                long v = kv.length > 1 ? Long.decode(kv[1].trim()) : next;
                constants.put(kv[0].trim(), v);
                next = v + 1;
            }
        }
        Map<String, List<Field>> structs = new LinkedHashMap<>();
        Matcher st = Pattern.compile("(?s)typedef\\s+struct\\s+(\\w+)\\s*\\{(.*?)\\}\\s*(\\w+)\\s*;").matcher(src);
        while (st.find()) {
            List<Field> fields = new ArrayList<>();
            // the type may end in '*' (a pointer field such as void* cuda_stream)
            Matcher f = Pattern.compile("([\\w ]+?[\\s*]+)(\\w+)\\s*(?:\\[\\s*(\\w+)\\s*\\])?\\s*;").matcher(st.group(2));
            while (f.find()) {
                long count = 1;
                if (f.group(3) != null) {
                    String n = f.group(3);
                    count = n.matches("\\d+") ? Long.parseLong(n) : constants.getOrDefault(n, -1L);
                }
                fields.add(new Field(f.group(1).trim(), f.group(2), count));
            }
            structs.put(st.group(3), fields);
        }
        Map<String, Function> functions = new LinkedHashMap<>();
        Matcher fn = Pattern.compile("HSPMN_API\\s+([^;(]+?)\\s*\\b(hspmn_\\w+)\\s*\\(([^;)]*)\\)\\s*;").matcher(src);
        while (fn.find()) {
            List<String> params = new ArrayList<>();
            String ps = fn.group(3).replaceAll("\\s+", " ").trim();
            if (!ps.equals("void") && !ps.isEmpty()) {
                for (String p : ps.split(",")) {
                    // drop the parameter name: the last identifier
                    params.add(p.trim().replaceAll("\\b\\w+$", "").trim());
                }
            }
            functions.put(fn.group(2), new Function(fn.group(2), fn.group(1).trim(), params));
        }
        return new Header(functions, structs, constants, enums);
    }

    /** The layout a C type must have in a descriptor, as a comparable description; null for void. */
    static String expected(String cType, Header h, List<String> problems, String where) {
        String t = cType.replace("const", " ").replaceAll("\\s+", " ").trim();
        if (t.contains("*")) {
            return "ADDRESS";
        }
        if (t.equals("void")) {
            return null;
        }
        if (t.equals("int32_t") || h.enums().contains(t) || t.equals("int")) {
            return "JAVA_INT";
        }
        if (t.equals("int64_t") || t.equals("uint64_t")) {
            return "JAVA_LONG";
        }
        if (t.equals("float")) {
            return "JAVA_FLOAT";
        }
        if (t.equals("uint8_t") || t.equals("int8_t")) {
            return "byte";  // JAVA_BYTE's carrier, as describe() names it
        }
        if (t.equals("double")) {
            return "JAVA_DOUBLE";
        }
        if (h.structs().containsKey(t)) {
            return "struct " + t + structBody(h, t);
        }
        problems.add(where + ": C type '" + cType + "' has no mapping in this test");
        return "?";
    }

    static String structBody(Header h, String struct) {
        StringBuilder sb = new StringBuilder("{");
        for (Field f : h.structs().get(struct)) {
            // A nested struct member carries its field name in the layout, not its type's name: compare bodies.
            String elem = h.structs().containsKey(f.type()) ? "struct" + structBody(h, f.type())
                    : expected(f.type(), h, new ArrayList<>(), struct);
            sb.append(f.count() > 1 || f.count() < 0 ? "[" + f.count() + " x " + elem + "]" : elem).append(' ').append(f.name()).append(';');
        }
        return sb.append('}').toString();
    }

    /** The same description for a layout the bindings use. */
    static String describe(MemoryLayout l) {
        return describe(l, true);
    }

    private static String describe(MemoryLayout l, boolean top) {
        if (l == null) {
            return null;
        }
        if (l instanceof AddressLayout) {
            return "ADDRESS";
        }
        if (l instanceof ValueLayout v) {
            String c = v.carrier() == int.class ? "JAVA_INT" : v.carrier() == long.class ? "JAVA_LONG"
                    : v.carrier() == float.class ? "JAVA_FLOAT" : v.carrier() == double.class ? "JAVA_DOUBLE"
                    : v.carrier().getName();
            return c;
        }
        if (l instanceof SequenceLayout s) {
            return "[" + s.elementCount() + " x " + describe(s.elementLayout(), false) + "]";
        }
        if (l instanceof GroupLayout g) {
            StringBuilder sb = new StringBuilder(top ? "struct " + g.name().orElse("?") + "{" : "struct{");
            for (MemoryLayout m : g.memberLayouts()) {
                if (m instanceof PaddingLayout) {
                    continue;
                }
                sb.append(describe(m, false)).append(' ').append(m.name().orElse("?")).append(';');
            }
            return sb.append('}').toString();
        }
        return l.toString();
    }

    /** Everything that differs between a header and the bindings class; empty when in lockstep. */
    static List<String> mismatches(Header h, Class<?> bindings) {
        List<String> problems = new ArrayList<>();
        Map<String, Method> descriptors = new LinkedHashMap<>();
        Map<String, List<Method>> wrappers = new LinkedHashMap<>();
        for (Method m : bindings.getMethods()) {
            if (!Modifier.isStatic(m.getModifiers())) {
                continue;
            }
            if (m.getName().endsWith("$descriptor")) {
                descriptors.put(m.getName().substring(0, m.getName().length() - "$descriptor".length()), m);
            } else if (!m.getName().contains("$")) {
                wrappers.computeIfAbsent(m.getName(), k -> new ArrayList<>()).add(m);
            }
        }
        for (Function f : h.functions().values()) {
            Method dm = descriptors.get(f.name());
            if (dm == null) {
                problems.add(f.name() + ": in the header but has no binding in " + bindings.getSimpleName());
                continue;
            }
            FunctionDescriptor d;
            try {
                d = (FunctionDescriptor) dm.invoke(null);
            } catch (ReflectiveOperationException e) {
                problems.add(f.name() + ": $descriptor() failed: " + e);
                continue;
            }
            String wantRet = expected(f.returnType(), h, problems, f.name() + " return");
            String gotRet = describe(d.returnLayout().orElse(null));
            if (!java.util.Objects.equals(wantRet, gotRet)) {
                problems.add(f.name() + ": returns " + f.returnType() + " -> " + wantRet + ", binding has " + gotRet);
            }
            List<MemoryLayout> args = d.argumentLayouts();
            if (args.size() != f.paramTypes().size()) {
                problems.add(f.name() + ": " + f.paramTypes().size() + " parameters in the header, " + args.size()
                        + " in the binding");
            } else {
                for (int i = 0; i < args.size(); i++) {
                    String want = expected(f.paramTypes().get(i), h, problems, f.name() + " parameter " + i);
                    String got = describe(args.get(i));
                    if (!want.equals(got)) {
                        problems.add(f.name() + ": parameter " + i + " is " + f.paramTypes().get(i) + " -> " + want
                                + ", binding has " + got);
                    }
                }
            }
            boolean structReturn = wantRet != null && wantRet.startsWith("struct ");
            int javaParams = f.paramTypes().size() + (structReturn ? 1 : 0);
            List<Method> ws = wrappers.getOrDefault(f.name(), List.of());
            if (ws.stream().noneMatch(w -> w.getParameterCount() == javaParams)) {
                problems.add(f.name() + ": no wrapper method taking " + javaParams + " parameters"
                        + (structReturn ? " (SegmentAllocator first)" : ""));
            }
        }
        for (String name : descriptors.keySet()) {
            if (!h.functions().containsKey(name)) {
                problems.add(name + ": bound in " + bindings.getSimpleName() + " but not declared in the header");
            }
        }
        for (Map.Entry<String, Long> c : h.constants().entrySet()) {
            try {
                Object v = bindings.getMethod(c.getKey()).invoke(null);
                if (((Number) v).longValue() != c.getValue()) {
                    problems.add(c.getKey() + " = " + c.getValue() + " in the header, " + v + " in the bindings");
                }
            } catch (NoSuchMethodException e) {
                problems.add(c.getKey() + ": constant missing from the bindings");
            } catch (ReflectiveOperationException e) {
                problems.add(c.getKey() + ": " + e);
            }
        }
        return problems;
    }

    static String header() throws IOException {
        return Files.readString(headerPath());
    }

    @Test
    void bindingsMatchTheHeader() throws IOException {
        Header h = parse(header());
        assertTrue(h.functions().size() >= 30, "parsed only " + h.functions().size() + " functions from " + headerPath());
        List<String> problems = mismatches(h, hspmn_h.class);
        assertTrue(problems.isEmpty(), "bindings and " + headerPath() + " differ:\n  " + String.join("\n  ", problems));
    }

    /** The check itself: a function added to the header without a binding must be reported. */
    @Test
    void aMissingBindingIsReported() throws IOException {
        String extra = header().replace("#ifdef __cplusplus\n}", 
                "HSPMN_API hspmn_status hspmn_block_new_thing(hspmn_block* block, int64_t n);\n#ifdef __cplusplus\n}");
        Header h = parse(extra);
        assertTrue(h.functions().containsKey("hspmn_block_new_thing"), "test header edit did not take");
        List<String> problems = mismatches(h, hspmn_h.class);
        assertEquals(1, problems.size(), problems::toString);
        assertTrue(problems.get(0).contains("hspmn_block_new_thing"));

        // and a changed parameter type
        String changed = header().replace("hspmn_gumbel_noise(hspmn_context* ctx, uint64_t seed, int64_t step, int32_t layer",
                "hspmn_gumbel_noise(hspmn_context* ctx, uint64_t seed, int32_t step, int32_t layer");
        List<String> p2 = mismatches(parse(changed), hspmn_h.class);
        assertTrue(p2.stream().anyMatch(s -> s.contains("hspmn_gumbel_noise") && s.contains("parameter 2")), p2::toString);
    }

    /** The nested-struct check itself: a field changed inside hspmn_block_params must show in hspmn_model_params. */
    @Test
    void aChangedNestedStructIsReported() throws IOException {
        Header h = parse(header());
        String bound = describe(io.hspmn.ffi.hspmn_model_params.layout());
        assertEquals("struct hspmn_model_params" + structBody(h, "hspmn_model_params"), bound);
        // hspmn_block_params.norm_eps becomes an int (the field's comment follows it on its line)
        Header changed = parse(header().replace("    float norm_eps; ", "    int32_t norm_eps; "));
        assertTrue(!changed.structs().get("hspmn_block_params").equals(h.structs().get("hspmn_block_params")),
                "test header edit did not take");
        assertTrue(!("struct hspmn_model_params" + structBody(changed, "hspmn_model_params")).equals(bound));
        // two ints and the nested struct: the parser's C sizes agree with the generated layout's
        assertEquals(8 + io.hspmn.ffi.hspmn_block_params.layout().byteSize(), sizeOf(h, "hspmn_model_params"));
    }

    @Test
    void libraryExportsEveryFunction() throws IOException {
        Header h = parse(header());
        List<String> missing = new ArrayList<>();
        for (String f : h.functions().keySet()) {
            if (NativeLibrary.lookup().find(f).isEmpty()) {
                missing.add(f);
            }
        }
        assertTrue(missing.isEmpty(), "declared in hspmn.h but not exported by " + NativeLibrary.source() + ": " + missing);
    }

    /** Field order, types and C natural-alignment offsets of every struct. */
    @Test
    void structLayoutsMatchTheHeader() throws Exception {
        Header h = parse(header());
        assertEquals(Set.of("hspmn_alloc_stats", "hspmn_context_params", "hspmn_tensor_desc", "hspmn_block_params",
                "hspmn_forward_params", "hspmn_backward_params", "hspmn_model_params", "hspmn_model_forward_params",
                "hspmn_model_backward_params", "hspmn_adamw_params", "hspmn_adamw_result", "hspmn_sampling_params",
                "hspmn_comm_params", "hspmn_data_parallel_params", "hspmn_data_parallel_stats"),
                h.structs().keySet());
        for (Map.Entry<String, List<Field>> s : h.structs().entrySet()) {
            Class<?> c = Class.forName("io.hspmn.ffi." + s.getKey());
            GroupLayout layout = (GroupLayout) c.getMethod("layout").invoke(null);
            assertEquals("struct " + s.getKey() + structBody(h, s.getKey()), describe(layout), s.getKey());
            long offset = 0;
            long maxAlign = 1;
            for (Field f : s.getValue()) {
                long size = sizeOf(h, f.type());
                long align = alignOf(h, f.type());
                maxAlign = Math.max(maxAlign, align);
                offset = (offset + align - 1) / align * align;
                assertEquals(offset, layout.byteOffset(MemoryLayout.PathElement.groupElement(f.name())),
                        s.getKey() + "." + f.name() + " offset");
                assertEquals(offset, (long) c.getMethod(f.name() + "$offset").invoke(null), s.getKey() + "." + f.name() + "$offset()");
                offset += size * f.count();
            }
            assertEquals(sizeOf(h, s.getKey()), layout.byteSize(), s.getKey() + " size");
        }
    }

    /** C's size of a field type of the header: scalars, or a struct padded to its alignment. */
    static long sizeOf(Header h, String type) {
        List<Field> fields = h.structs().get(type);
        if (fields == null) {
            if (type.equals("uint8_t") || type.equals("int8_t")) {
                return 1;
            }
            return type.equals("int64_t") || type.equals("uint64_t") || type.equals("double") || type.endsWith("*") ? 8 : 4;
        }
        long offset = 0;
        for (Field f : fields) {
            long align = alignOf(h, f.type());
            offset = (offset + align - 1) / align * align + sizeOf(h, f.type()) * f.count();
        }
        long align = alignOf(h, type);
        return (offset + align - 1) / align * align;
    }

    static long alignOf(Header h, String type) {
        List<Field> fields = h.structs().get(type);
        if (fields == null) {
            return sizeOf(h, type);
        }
        long a = 1;
        for (Field f : fields) {
            a = Math.max(a, alignOf(h, f.type()));
        }
        return a;
    }
}

#!/usr/bin/env python3
"""Generates libhspmn's bindings from native/include/hspmn.h with libclang, where jextract is not at hand:

  --java DIR    the FFM bindings (package io.hspmn.ffi) in jextract 22's layout as callers see it: hspmn_h.java
                (typedef layouts, constants, per function $descriptor/$handle/$address and a wrapper) and one
                class per struct (layout, sizeof, allocate, allocateArray, asSlice, reinterpret; per field
                $layout/$offset, getter/setter, indexed accessors for arrays); what they all share is written
                once into hspmn_h$shared.java (from ci/bindgen_shared.java.in): the C layouts of the scalars and
                of every struct, symbol lookup, downcall linking (and its -Djextract.trace.downcalls tracing),
                the struct array / reinterpret bodies
  --notes FILE  the field notes as JSON ({struct: {field: comment}}) for the Java side, whichever tool made
                its bindings (io/hspmn/ffi/field-notes.json, read by HspmnConfig)
  --python FILE the ctypes declarations: constants, one ctypes.Structure per struct, FUNCTIONS (restype,
                argtypes) per function; native/reference/hspmn_ctypes.py adds the hand-written helpers.

What goes in is what jextract's filters in ci/bindings.sh take: the header's own functions, structs, enum
constants and integer #defines, and the standard typedefs they use. Output depends only on the header (and
the first line names the libclang that parsed it), so ci/bindings.sh --check can compare it with the
committed files.
  usage: ci/bindgen.py HEADER [--java DIR] [--python FILE] [--notes FILE]      (LIBCLANG=/path/libclang.so to pick one)
         ci/bindgen.py --probe                                   (exit 1 when libclang cannot be loaded)
"""

import argparse
import glob
import json
import os
import re
import sys

TOOL = "ci/bindgen.py"
PACKAGE = "io.hspmn.ffi"
HEADER_CLASS = "hspmn_h"
PREFIX = "hspmn_"


def load_clang():
    """Debian's python3-clang lives in the system dist-packages, which a pyenv or venv python does not see;
    its libclang is /usr/lib/llvm-<N>/lib/libclang-<N>.so.1 (the newest N is taken)."""
    try:
        import clang.cindex as ci
    except ImportError:
        for d in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"):
            if os.path.isdir(os.path.join(d, "clang")):
                sys.path.append(d)
                break
        try:
            import clang.cindex as ci
        except ImportError:
            sys.exit("bindgen: the libclang python bindings are missing (Debian: apt-get install -y python3-clang)")
    lib = os.environ.get("LIBCLANG")
    if not lib:
        def version(p):
            m = re.search(r"llvm-(\d+)", p)
            return int(m.group(1)) if m else 0
        found = sorted(glob.glob("/usr/lib/llvm-*/lib/libclang-*.so*") + glob.glob("/usr/lib/llvm-*/lib/libclang.so*"),
                       key=version)
        lib = found[-1] if found else None
    if lib:
        ci.Config.set_library_file(lib)
    try:
        ci.Index.create()
    except Exception as e:  # noqa: BLE001 - cindex raises LibclangError or OSError
        sys.exit(f"bindgen: libclang could not be loaded ({e}); Debian: apt-get install -y libclang-dev")
    f = ci.conf.lib.clang_getClangVersion
    f.restype, f.argtypes = ci._CXString, []
    return ci, ci._CXString.from_result(f())


# ---- the header, reduced to what both outputs need ---------------------------------------------------------

class Decls:
    def __init__(self):
        # ("typedef", c) first, then in header order ("const", name, value, text) / ("func", c) / ("struct", c)
        self.items = []
        self.structs = {}    # name -> cursor of its definition


def parse(ci, header):
    K = ci.CursorKind
    tu = ci.Index.create().parse(header, args=["-x", "c", "-std=c11"],
                                 options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD)
    errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
    if errors:
        sys.exit("bindgen: " + "\n".join(str(d) for d in errors))
    own = os.path.realpath(header)
    d = Decls()
    used_typedefs = []

    def note_typedefs(t):
        while t.kind == ci.TypeKind.POINTER:
            t = t.get_pointee()
        if t.kind == ci.TypeKind.CONSTANTARRAY:
            return note_typedefs(t.element_type)
        if t.kind == ci.TypeKind.TYPEDEF:
            decl = t.get_declaration()
            if os.path.realpath(str(decl.location.file)) != own and decl.spelling not in used_typedefs:
                used_typedefs.append(decl.spelling)

    cursors = list(tu.cursor.get_children())
    for c in cursors:
        if c.location.file is None or os.path.realpath(str(c.location.file)) != own:
            continue
        if c.kind == K.FUNCTION_DECL and c.spelling.startswith(PREFIX):
            note_typedefs(c.result_type)
            for a in c.get_arguments():
                note_typedefs(a.type)
        elif c.kind == K.STRUCT_DECL and c.is_definition():
            d.structs[c.spelling] = c
            for f in c.get_children():
                if f.kind == K.FIELD_DECL:
                    note_typedefs(f.type)
    for c in cursors:
        in_header = c.location.file is not None and os.path.realpath(str(c.location.file)) == own
        if c.kind == K.TYPEDEF_DECL and not in_header and c.spelling in used_typedefs:
            d.items.append(("typedef", c))
        if not in_header:
            continue
        if c.kind == K.MACRO_DEFINITION:
            toks = [t.spelling for t in c.get_tokens()]
            if len(toks) == 2 and c.spelling.startswith("HSPMN_") and re.fullmatch(r"-?\d+", toks[1]):
                d.items.append(("const", c.spelling, int(toks[1]), f"#define {c.spelling} {toks[1]}",
                                c.extent.start.offset))
        elif c.kind == K.ENUM_DECL and c.is_definition():
            for e in c.get_children():
                d.items.append(("const", e.spelling, e.enum_value, f"enum {c.spelling}.{e.spelling} = {e.enum_value}",
                                e.extent.start.offset))
        elif c.kind == K.STRUCT_DECL and c.is_definition():
            d.items.append(("struct", c, c.extent.start.offset))
        elif c.kind == K.FUNCTION_DECL and c.spelling.startswith(PREFIX):
            d.items.append(("func", c, c.extent.start.offset))
    # Macros come first among a translation unit's cursors; jextract's order is the header's own.
    d.items.sort(key=lambda i: (0, 0) if i[0] == "typedef" else (1, i[-1]))
    d.items = [i[:-1] if i[0] != "typedef" else i for i in d.items]
    return d


def fields(ci, struct):
    return [f for f in struct.get_children() if f.kind == ci.CursorKind.FIELD_DECL]


def field_decl(f):
    """The field as written: `int64_t shape[HSPMN_MAX_DIMS]` keeps the header's spelling of the extent."""
    t = f.type
    if t.kind.name == "CONSTANTARRAY":
        toks = [x.spelling for x in f.get_tokens()]
        extent = "".join(toks[toks.index("[") + 1:toks.index("]")]) if "[" in toks else str(t.element_count)
        return f"{t.element_type.spelling} {f.spelling}[{extent}]"
    return c_decl(t.spelling, f.spelling)


def c_decl(type_spelling, name):
    return f"{type_spelling}{name}" if type_spelling.endswith("*") else f"{type_spelling} {name}"


def func_decl(fn):
    args = ", ".join(c_decl(a.type.spelling, a.spelling) for a in fn.get_arguments())
    return c_decl(fn.result_type.spelling, f"{fn.spelling}({args})")


# ---- Java (jextract 22's layout) ---------------------------------------------------------------------------
# What callers see is jextract's: hspmn_h (constants, typedef layouts, per function $descriptor/$handle/$address
# and a wrapper) and one class per struct (layout, sizeof, allocate, allocateArray, asSlice, reinterpret, and
# per field $layout/$offset, getter and setter, indexed ones for arrays). What every class would repeat is
# written once in hspmn_h$shared (from the template ci/bindgen_shared.java.in): the C layouts, symbol lookup,
# downcall linking with its tracing, and the struct array / reinterpret bodies.

SHARED_CLASS = f"{HEADER_CLASS}$shared"
SHARED_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bindgen_shared.java.in")

# The C layouts of hspmn_h$shared, in jextract's order: name, ValueLayout class, value.
C_LAYOUTS = [("C_BOOL", "OfBoolean", "JAVA_BOOLEAN"), ("C_CHAR", "OfByte", "JAVA_BYTE"),
             ("C_SHORT", "OfShort", "JAVA_SHORT"), ("C_INT", "OfInt", "JAVA_INT"),
             ("C_LONG_LONG", "OfLong", "JAVA_LONG"), ("C_FLOAT", "OfFloat", "JAVA_FLOAT"),
             ("C_DOUBLE", "OfDouble", "JAVA_DOUBLE"),
             ("C_POINTER", None, "ADDRESS\n            .withTargetLayout("
                                 "MemoryLayout.sequenceLayout(java.lang.Long.MAX_VALUE, ValueLayout.JAVA_BYTE))"),
             ("C_LONG", "OfLong", "JAVA_LONG")]

# C scalar type kind -> (C layout, Java carrier)
SCALARS = {"BOOL": ("C_BOOL", "boolean"), "CHAR_S": ("C_CHAR", "byte"), "SCHAR": ("C_CHAR", "byte"),
           "UCHAR": ("C_CHAR", "byte"), "SHORT": ("C_SHORT", "short"), "USHORT": ("C_SHORT", "short"),
           "INT": ("C_INT", "int"), "UINT": ("C_INT", "int"), "LONG": ("C_LONG", "long"),
           "ULONG": ("C_LONG", "long"), "LONGLONG": ("C_LONG_LONG", "long"), "ULONGLONG": ("C_LONG_LONG", "long"),
           "FLOAT": ("C_FLOAT", "float"), "DOUBLE": ("C_DOUBLE", "double")}
LAYOUT_CLASS = {name: cls for name, cls, _ in C_LAYOUTS}


class JType:
    def __init__(self, layout, layout_class, java, kind):
        self.layout, self.layout_class, self.java, self.kind = layout, layout_class, java, kind


def jtype(ci, t, struct_layout="{}.layout()", scalars=f"{HEADER_CLASS}."):
    """C type -> (layout expression, layout class, Java carrier, kind: value/address/group/sequence); a struct's
    layout is struct_layout with the struct's name, a C layout is named with the prefix scalars."""
    T = ci.TypeKind
    c = t.get_canonical()
    if c.kind == T.ENUM:
        c = c.get_declaration().enum_type.get_canonical()
    if c.kind.name in SCALARS:
        lay, java = SCALARS[c.kind.name]
        return JType(f"{scalars}{lay}", LAYOUT_CLASS[lay], java, "value")
    if c.kind == T.POINTER:
        return JType(f"{scalars}C_POINTER", "AddressLayout", "MemorySegment", "address")
    if c.kind == T.RECORD:
        return JType(struct_layout.format(c.get_declaration().spelling), "GroupLayout", "MemorySegment", "group")
    if c.kind == T.CONSTANTARRAY:
        e = jtype(ci, c.element_type, struct_layout, scalars)
        return JType(f"MemoryLayout.sequenceLayout({c.element_count}, {e.layout})", "SequenceLayout",
                     "MemorySegment", "sequence")
    sys.exit(f"bindgen: no Java mapping for C type {t.spelling}")


def imports(*extra):
    lines = [f"package {PACKAGE};", "", "import java.lang.foreign.*;"] + [f"import {i};" for i in extra]
    return "\n".join(lines) + "\n"


def snippet(lines, indent="    ", before=None):
    """A javadoc holding C text as jextract writes it."""
    out = [f"{indent}/**"] + ([f"{indent} * {before}"] if before else []) + [f"{indent} * {{@snippet lang=c :"]
    out += [f"{indent} * {line}" for line in lines]
    out += [f"{indent} * }}", f"{indent} */"]
    return "\n".join(out) + "\n"


def method(doc, signature, body):
    """A public static method with a one-line javadoc and a one-statement body."""
    return f"    /** {doc} */\n    public static {signature} {{\n        {body};\n    }}\n\n"


def java_shared(ci, decls, banner):
    """The template with the C scalar layouts and, in header order, the layout of every struct (its class's
    $LAYOUT; a nested struct names the earlier one's, so no struct class is initialised from here)."""
    layouts = []
    for name, cls, value in C_LAYOUTS:
        cls = f"ValueLayout.{cls}" if cls else "AddressLayout"
        layouts.append(f"    public static final {cls} {name} = ValueLayout.{value};\n")
    for kind, *rest in decls.items:
        if kind == "struct":
            layouts.append("\n" + struct_layout(ci, rest[0]))
    with open(SHARED_TEMPLATE) as fh:
        text = fh.read()
    return (text.replace("@BANNER@", banner.rstrip("\n")).replace("@PACKAGE@", PACKAGE)
            .replace("@LAYOUTS@\n", "".join(layouts)))


def struct_layout(ci, st):
    """`static final GroupLayout <struct>$LAYOUT = ...;` with the padding C puts between and after the fields."""
    name = st.spelling
    members, at = [], 0
    for f in fields(ci, st):
        off = f.get_field_offsetof() // 8
        if off > at:
            members.append(f"        MemoryLayout.paddingLayout({off - at})")
        members.append(f"        {jtype(ci, f.type, '{}$LAYOUT', '').layout}.withName(\"{f.spelling}\")")
        at = off + f.type.get_size()
    if st.type.get_size() > at:
        members.append(f"        MemoryLayout.paddingLayout({st.type.get_size() - at})")
    return (f"    static final GroupLayout {name}$LAYOUT = MemoryLayout.structLayout(\n" + ",\n".join(members)
            + f"\n    ).withName(\"{name}\");\n")


def java_header(ci, decls, banner):
    out = [banner, imports("java.lang.invoke.*"), "\nimport static java.lang.foreign.ValueLayout.*;\n",
           f"\npublic class {HEADER_CLASS} extends {SHARED_CLASS} {{\n\n",
           f"    {HEADER_CLASS}() {{\n        // Should not be called directly\n    }}\n\n"]
    for item in decls.items:
        kind = item[0]
        if kind == "typedef":
            c = item[1]
            j = jtype(ci, c.underlying_typedef_type)
            under = c.underlying_typedef_type.get_canonical().spelling
            out.append(f"    /** {{@code typedef {under} {c.spelling}}} */\n"
                       f"    public static final {j.layout_class} {c.spelling} = {j.layout};\n\n")
        elif kind == "const":
            _, name, value, text = item
            out.append(method(f"{{@code {text}}}", f"int {name}()", f"return {value}"))
        elif kind == "func":
            out.append(java_function(ci, item[1]))
    out[-1] = out[-1].rstrip("\n") + "\n"
    out.append("}\n")
    return "".join(out)


def java_function(ci, fn):
    """The linking holder (linked on first use, as jextract does), $descriptor/$handle/$address and the wrapper."""
    name = fn.spelling
    ret = fn.result_type
    void = ret.kind == ci.TypeKind.VOID
    rj = None if void else jtype(ci, ret)
    args = list(fn.get_arguments())
    ajs = [jtype(ci, a.type) for a in args]
    layouts = ",\n".join(f"            {lay}" for lay in ([] if void else [rj.layout]) + [a.layout for a in ajs])
    s = [f"    private static class {name} {{\n",
         f"        static final FunctionDescriptor DESC = FunctionDescriptor.{'ofVoid' if void else 'of'}(\n"
         f"{layouts}\n        );\n",
         f"        static final MemorySegment ADDR = findOrThrow(\"{name}\");\n",
         f"        static final MethodHandle HANDLE = downcallHandle(\"{name}\", ADDR, DESC);\n",
         "    }\n\n"]
    for what, suffix, cls, field in (("Function descriptor", "descriptor", "FunctionDescriptor", "DESC"),
                                     ("Downcall method handle", "handle", "MethodHandle", "HANDLE"),
                                     ("Address", "address", "MemorySegment", "ADDR")):
        s.append(method(f"{what} for {{@link #{name}}}", f"{cls} {name}${suffix}()", f"return {name}.{field}"))
    params = [f"{a.java} {p.spelling}" for a, p in zip(ajs, args)]
    names = [p.spelling for p in args]
    if rj is not None and rj.kind == "group":
        params.insert(0, "SegmentAllocator allocator")
        names.insert(0, "allocator")
    call = f"{name}.HANDLE.invokeExact({', '.join(names)})"
    s.append(snippet([func_decl(fn)]))
    s.append(f"    public static {'void' if void else rj.java} {name}({', '.join(params)}) {{\n"
             f"        try {{\n            {call if void else f'return ({rj.java}) {call}'};\n"
             "        } catch (Throwable ex$) {\n"
             "            throw new AssertionError(\"should not reach here\", ex$);\n"
             "        }\n    }\n\n")
    return "".join(s)


def java_struct(ci, st, banner):
    """The struct's class: its layout (kept in hspmn_h$shared), the struct methods, then where each field is
    ($layout/$offset, $dimensions for arrays) and then how each is read and written (getter/setter, indexed ones
    for arrays): two passes over the fields, so a field's accessors sit among their struct's other accessors."""
    name = st.spelling
    fs = fields(ci, st)
    this = f"{{@code struct {name}}}"
    s = [banner, imports("java.lang.invoke.*", "java.util.function.Consumer"), "\n",
         "import static java.lang.foreign.ValueLayout.*;\n"
         "import static java.lang.foreign.MemoryLayout.PathElement.*;\n\n",
         snippet([f"struct {name} {{"] + [f"    {field_decl(f)};" for f in fs] + ["}"], indent=""),
         f"public class {name} {{\n\n    {name}() {{\n        // Should not be called directly\n    }}\n\n",
         f"    private static final GroupLayout $LAYOUT = {SHARED_CLASS}.{name}$LAYOUT;\n\n",
         method(f"The layout of {this}", "final GroupLayout layout()", "return $LAYOUT"),
         method(f"The size (in bytes) of {this}", "long sizeof()", "return $LAYOUT.byteSize()"),
         method(f"Allocates one {this} with {{@code allocator}}", "MemorySegment allocate(SegmentAllocator allocator)",
                "return allocator.allocate($LAYOUT)"),
         method(f"Allocates an array of {{@code elementCount}} {this} with {{@code allocator}}",
                "MemorySegment allocateArray(long elementCount, SegmentAllocator allocator)",
                f"return {SHARED_CLASS}.allocateArray($LAYOUT, elementCount, allocator)"),
         method(f"Element {{@code index}} of {{@code array}}, an array of {this}",
                "MemorySegment asSlice(MemorySegment array, long index)",
                f"return {SHARED_CLASS}.asSlice($LAYOUT, array, index)"),
         method(f"{{@code addr}} as one {this} in {{@code arena}}, with {{@code cleanup}} if any",
                "MemorySegment reinterpret(MemorySegment addr, Arena arena, Consumer<MemorySegment> cleanup)",
                f"return {SHARED_CLASS}.reinterpret($LAYOUT, addr, 1, arena, cleanup)"),
         method(f"{{@code addr}} as {{@code elementCount}} {this} in {{@code arena}}, with {{@code cleanup}} if any",
                "MemorySegment reinterpret(MemorySegment addr, long elementCount, Arena arena, "
                "Consumer<MemorySegment> cleanup)",
                f"return {SHARED_CLASS}.reinterpret($LAYOUT, addr, elementCount, arena, cleanup)")]
    parts = [java_field(ci, name, f) for f in fs]
    s += [where for where, _ in parts] + [access for _, access in parts]
    s[-1] = s[-1].rstrip("\n") + "\n"
    s.append("}\n")
    return "".join(s)


def java_field(ci, struct, f):
    """One field's members, as (where it is: $LAYOUT/$layout(), $OFFSET/$offset(); accessors)."""
    n, j = f.spelling, jtype(ci, f.type)
    field = f"field {{@code {field_decl(f)}}} of {{@code struct {struct}}}"
    select = f"({j.layout_class})$LAYOUT.select(groupElement(\"{n}\"))"
    where = [f"    private static final {j.layout_class} {n}$LAYOUT = {select};\n\n",
             method(f"Layout for {field}", f"final {j.layout_class} {n}$layout()", f"return {n}$LAYOUT"),
             f"    private static final long {n}$OFFSET = {f.get_field_offsetof() // 8};\n\n",
             method(f"Offset for {field}", f"final long {n}$offset()", f"return {n}$OFFSET")]
    if j.kind in ("value", "address"):
        access = [method(f"Getter for {field}", f"{j.java} {n}(MemorySegment struct)",
                         f"return struct.get({n}$LAYOUT, {n}$OFFSET)"),
                  method(f"Setter for {field}", f"void {n}(MemorySegment struct, {j.java} fieldValue)",
                         f"struct.set({n}$LAYOUT, {n}$OFFSET, fieldValue)")]
    else:
        access = [method(f"Getter for {field}", f"MemorySegment {n}(MemorySegment struct)",
                         f"return struct.asSlice({n}$OFFSET, {n}$LAYOUT.byteSize())"),
                  method(f"Setter for {field}", f"void {n}(MemorySegment struct, MemorySegment fieldValue)",
                         f"MemorySegment.copy(fieldValue, 0L, struct, {n}$OFFSET, {n}$LAYOUT.byteSize())")]
    if j.kind == "sequence":
        t = f.type.get_canonical()
        dims = []
        while t.kind == ci.TypeKind.CONSTANTARRAY:
            dims.append(t.element_count)
            t = t.element_type
        e = jtype(ci, t)
        idx = ", ".join(f"long index{i}" for i in range(len(dims)))
        idxn = ", ".join(f"index{i}" for i in range(len(dims)))
        elems = ", ".join("sequenceElement()" for _ in dims)
        where += [f"    private static final long[] {n}$DIMS = {{ {', '.join(map(str, dims))} }};\n\n",
                  method(f"Dimensions for array {field}", f"long[] {n}$dimensions()", f"return {n}$DIMS")]
        access += [f"    private static final VarHandle {n}$ELEM_HANDLE = {n}$LAYOUT.varHandle({elems});\n\n",
                   method(f"Indexed getter for {field}", f"{e.java} {n}(MemorySegment struct, {idx})",
                          f"return ({e.java}) {n}$ELEM_HANDLE.get(struct, {n}$OFFSET, {idxn})"),
                   method(f"Indexed setter for {field}", f"void {n}(MemorySegment struct, {idx}, {e.java} fieldValue)",
                          f"{n}$ELEM_HANDLE.set(struct, {n}$OFFSET, {idxn}, fieldValue)")]
    return "".join(where), "".join(access)


# ---- Python (ctypes) ---------------------------------------------------------------------------------------

def camel(struct_name):
    return "".join(p.capitalize() for p in struct_name[len(PREFIX):].split("_"))


def ctype(ci, t, for_arg):
    """ctypes type of a C type. Pointers to the header's structs are typed; char* is c_char_p; every other
    pointer (handles, out-pointers, arrays) is c_void_p, which takes byref(...), ctypes arrays and ints."""
    T = ci.TypeKind
    c = t.get_canonical()
    if c.kind == T.ENUM:
        return "C.c_int32"  # enums are int values (hspmn_status...); clang may report unsigned
    scalars = {T.BOOL: "C.c_bool", T.CHAR_S: "C.c_char", T.SCHAR: "C.c_byte", T.UCHAR: "C.c_ubyte",
               T.SHORT: "C.c_int16", T.USHORT: "C.c_uint16", T.INT: "C.c_int32", T.UINT: "C.c_uint32",
               T.LONG: "C.c_int64", T.ULONG: "C.c_uint64", T.LONGLONG: "C.c_int64", T.ULONGLONG: "C.c_uint64",
               T.FLOAT: "C.c_float", T.DOUBLE: "C.c_double"}
    if c.kind in scalars:
        return scalars[c.kind]
    if c.kind == T.POINTER:
        p = c.get_pointee().get_canonical()
        if p.kind in (T.CHAR_S, T.SCHAR):
            return "C.c_char_p"
        if p.kind == T.RECORD and p.get_declaration().is_definition():
            return f"C.POINTER({camel(p.get_declaration().spelling)})"
        return "C.c_void_p"
    if c.kind == T.RECORD:
        return camel(c.get_declaration().spelling)
    if c.kind == T.CONSTANTARRAY:
        return f"{ctype(ci, c.element_type, for_arg)} * {c.element_count}"
    sys.exit(f"bindgen: no ctypes mapping for C type {t.spelling}")


def python_module(ci, decls, banner):
    out = [banner, '"""ctypes declarations of libhspmn\'s C ABI, generated from hspmn.h by ci/bindgen.py: '
           'do not edit;\nhspmn_ctypes.py builds on them."""\n\nimport ctypes as C\n\n']
    consts = [i for i in decls.items if i[0] == "const"]
    out += [f"{name} = {value}\n" for _, name, value, _ in consts]
    for kind, *rest in decls.items:
        if kind != "struct":
            continue
        st = rest[0]
        fl = [f"(\"{f.spelling}\", {ctype(ci, f.type, False)})" for f in fields(ci, st)]
        out.append(f"\n\nclass {camel(st.spelling)}(C.Structure):\n    \"\"\"struct {st.spelling}\"\"\"\n"
                   f"    _fields_ = [\n" + "".join(f"        {x},\n" for x in fl) + "    ]\n")
    out.append("\n\n# name: (restype, argtypes), in header order\nFUNCTIONS = {\n")
    for kind, *rest in decls.items:
        if kind != "func":
            continue
        fn = rest[0]
        res = "None" if fn.result_type.kind == ci.TypeKind.VOID else ctype(ci, fn.result_type, False)
        args = ", ".join(ctype(ci, a.type, True) for a in fn.get_arguments())
        out.append(f"    \"{fn.spelling}\": ({res}, [{args}]),\n")
    out.append("}\n")
    return "".join(out)


# ---- field notes: each field's default and comment, for the structs whose comments carry them -----------

# struct -> the name of its table in hspmn_h.py. A field's trailing /* ... */ ends with "default V" (a number
# or a constant of the header); reserved* fields have none and are left out.
NOTED_STRUCTS = {"hspmn_block_params": "BLOCK_PARAMS_NOTES"}


def field_notes(ci, struct, consts):
    """[(field, default as Python source, comment without the default)] of a noted struct, in field order."""
    with open(str(struct.location.file)) as fh:
        lines = fh.read().splitlines()
    out = []
    for f in fields(ci, struct):
        if f.spelling.startswith("reserved"):
            continue
        m = re.search(r"/\*(.*?)\*/", lines[f.location.line - 1])
        text = m.group(1).strip() if m else ""
        d = re.fullmatch(r"(.*?)[;,]?\s*\bdefault\s+(\S+)", text)
        if not d:
            sys.exit(f"bindgen: {struct.spelling}.{f.spelling}: its comment must end with 'default V', got {text!r}")
        token, is_float = d.group(2), f.type.get_canonical().kind in (ci.TypeKind.FLOAT, ci.TypeKind.DOUBLE)
        if token in consts:
            value = token
        elif re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[fF]?", token):
            value = repr(float(token.rstrip("fF"))) if is_float else str(int(token))
        else:
            sys.exit(f"bindgen: {struct.spelling}.{f.spelling}: default {token!r} is neither a number nor a constant")
        out.append((f.spelling, value, d.group(1).strip()))
    return out


def json_field_notes(ci, decls):
    """{struct: {field: comment}} of the noted structs, for Java (which reads the defaults from the library)."""
    consts = {i[1] for i in decls.items if i[0] == "const"}
    notes = {struct: {name: doc for name, _, doc in field_notes(ci, decls.structs[struct], consts)}
             for struct in NOTED_STRUCTS if struct in decls.structs}
    return json.dumps(notes, indent=2) + "\n"


def python_field_notes(ci, decls):
    """NAME = {field: (default, comment)} per noted struct, appended to hspmn_h.py."""
    consts = {i[1] for i in decls.items if i[0] == "const"}
    out = []
    for struct, table in NOTED_STRUCTS.items():
        if struct not in decls.structs:
            continue
        out.append(f"\n# struct {struct}: field -> (default, comment), from the header's field comments\n{table} = {{\n")
        out += [f"    {json.dumps(name)}: ({value}, {json.dumps(doc)}),\n" for name, value, doc in field_notes(ci, decls.structs[struct], consts)]
        out.append("}\n")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("header", nargs="?")
    ap.add_argument("--probe", action="store_true", help="only load libclang and print its version")
    ap.add_argument("--java", help="folder of package io.hspmn.ffi to write (its *.java are replaced)")
    ap.add_argument("--python", help="file to write the ctypes declarations to")
    ap.add_argument("--notes", help="file to write the field notes (JSON) to")
    ap.add_argument("--header-name", help="how the banner names the header (default: the path given)")
    a = ap.parse_args()
    ci, clang_version = load_clang()
    if a.probe or not a.header:
        print(f"bindgen: libclang {clang_version}")
        return
    decls = parse(ci, a.header)
    made_by = f"Generated by {TOOL} on libclang ({clang_version}) from {a.header_name or a.header}; do not edit"
    if a.java:
        os.makedirs(a.java, exist_ok=True)
        for old in glob.glob(os.path.join(a.java, "*.java")):
            os.remove(old)
        files = {f"{HEADER_CLASS}.java": java_header(ci, decls, f"// {made_by}\n\n"),
                 f"{SHARED_CLASS}.java": java_shared(ci, decls, f"// {made_by}\n")}
        for kind, *rest in decls.items:
            if kind == "struct":
                files[f"{rest[0].spelling}.java"] = java_struct(ci, rest[0], f"// {made_by}\n\n")
        for fname, text in files.items():
            with open(os.path.join(a.java, fname), "w") as fh:
                fh.write(text)
    if a.notes:
        with open(a.notes, "w") as fh:
            fh.write(json_field_notes(ci, decls))
    if a.python:
        with open(a.python, "w") as fh:
            fh.write(python_module(ci, decls, f"# {made_by}\n") + python_field_notes(ci, decls))


if __name__ == "__main__":
    main()

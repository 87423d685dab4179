package io.hspmn;

import io.hspmn.ffi.hspmn_h;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.Set;

/**
 * Finds and loads libhspmn, and is the one place that calls restricted FFM methods by hand
 * (the generated bindings in {@code io.hspmn.ffi} make their own downcall handles, as jextract emits them).
 *
 * <p>The bindings find their symbols with {@link SymbolLookup#loaderLookup()} (jextract's output without
 * {@code --library}): they know nothing of this class, which depends on them only for the ABI version. So
 * the library must be loaded (with {@link System#load}) before the first binding is called:
 * {@link #ensureLoaded()} does that. The API's first native call is made by {@link Hspmn} or {@link Context}
 * (every other object needs a Context), and both call it in their static initialisers.
 *
 * <p>Load order: (1) the file named by the system property {@value #PATH_PROPERTY}; (2) the copy
 * bundled in the jar at {@value #BUNDLED_RESOURCE}, extracted once per content hash into a folder of the
 * user's own under {@code java.io.tmpdir} ({@link #extract}); (3) each directory
 * of {@code java.library.path}. A candidate is accepted only if it exports {@code hspmn_abi_version}
 * and that returns the version the bindings were generated for. If none is accepted, one
 * {@link UnsatisfiedLinkError} lists every candidate with the reason it was refused.
 */
@SuppressWarnings("restricted")
public final class NativeLibrary {
    public static final String PATH_PROPERTY = "hspmn.library.path";
    public static final String BUNDLED_RESOURCE = "/native/linux-x86_64/libhspmn.so";
    static final String ACCESS_FLAG = "--enable-native-access=ALL-UNNAMED";

    /** An accepted library: its file, its symbols and a description of where it came from. */
    public record Loaded(Path file, SymbolLookup lookup, String source) {
    }

    private NativeLibrary() {
    }

    private static final class Holder {
        static final Loaded LOADED = loadForBindings();

        private static Loaded loadForBindings() {
            Loaded l = load(System.getProperty(PATH_PROPERTY), BUNDLED_RESOURCE,
                    System.getProperty("java.library.path", ""));
            // Associates the library with this class loader, where the bindings' loaderLookup() finds it.
            System.load(l.file().toAbsolutePath().toString());
            return l;
        }
    }

    /**
     * Loads the library (once per JVM; later calls return at once) so that the bindings can resolve their
     * symbols. Throws {@link UnsatisfiedLinkError} listing every candidate and why it was refused.
     */
    public static void ensureLoaded() {
        Objects.requireNonNull(Holder.LOADED, "libhspmn");
    }

    /** The library's symbols; loads it on first use. */
    public static SymbolLookup lookup() {
        return Holder.LOADED.lookup();
    }

    /** Where the library in use was loaded from. */
    public static String source() {
        return Holder.LOADED.source();
    }

    /** The ABI version these bindings were generated for. */
    public static int expectedAbiVersion() {
        return hspmn_h.HSPMN_ABI_VERSION();
    }

    /**
     * Runs the search with explicit inputs (the tests drive it this way; {@link #lookup()} uses the
     * system properties). A null or blank argument skips that step.
     */
    public static Loaded load(String explicitPath, String bundledResource, String javaLibraryPath) {
        List<String> tried = new ArrayList<>();
        Loaded found = search(explicitPath, bundledResource, javaLibraryPath, tried);
        boolean explicitRefused = explicitPath != null && !explicitPath.isBlank() && !tried.isEmpty()
                && tried.get(0).startsWith("-D" + PATH_PROPERTY + "=");
        if (found != null && explicitRefused) {
            // The order is fixed (property, bundled copy, java.library.path), but a user who named a
            // file should hear that it was not the one loaded.
            System.getLogger(NativeLibrary.class.getName()).log(System.Logger.Level.WARNING,
                    "libhspmn: " + tried.get(0) + "; loaded " + found.source() + " instead");
        }
        if (found != null) {
            return found;
        }
        StringBuilder sb = new StringBuilder("could not load libhspmn (ABI version ")
                .append(expectedAbiVersion()).append("). Tried:");
        for (int i = 0; i < tried.size(); i++) {
            sb.append("\n  ").append(i + 1).append(". ").append(tried.get(i));
        }
        sb.append("\nBuild it with `cmake -S native -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build`, ")
                .append("pass -D").append(PATH_PROPERTY).append("=/path/to/libhspmn.so, and run java with ")
                .append(ACCESS_FLAG).append('.');
        throw new UnsatisfiedLinkError(sb.toString());
    }

    private static Loaded search(String explicitPath, String bundledResource, String javaLibraryPath,
                                 List<String> tried) {
        if (explicitPath != null && !explicitPath.isBlank()) {
            Path p = Path.of(explicitPath);
            String what = "-D" + PATH_PROPERTY + "=" + p;
            if (!Files.isRegularFile(p)) {
                tried.add(what + ": no such file");
            } else {
                Loaded l = tryOpen(p, what, tried);
                if (l != null) {
                    return l;
                }
            }
        } else {
            tried.add("-D" + PATH_PROPERTY + ": not set");
        }
        if (bundledResource != null && !bundledResource.isBlank()) {
            String what = "bundled resource " + bundledResource;
            try (InputStream in = NativeLibrary.class.getResourceAsStream(bundledResource)) {
                if (in == null) {
                    tried.add(what + ": not on the class path");
                } else {
                    Path lib = extract(in.readAllBytes(), Path.of(System.getProperty("java.io.tmpdir")));
                    Loaded l = tryOpen(lib, what + " (extracted to " + lib + ")", tried);
                    if (l != null) {
                        return l;
                    }
                }
            } catch (IOException e) {
                tried.add(what + ": could not extract: " + e);
            }
        }
        String libName = System.mapLibraryName("hspmn");
        if (javaLibraryPath == null || javaLibraryPath.isBlank()) {
            tried.add("java.library.path: empty");
        } else {
            for (String dir : javaLibraryPath.split(java.io.File.pathSeparator)) {
                if (dir.isBlank()) {
                    continue;
                }
                Path p = Path.of(dir, libName);
                String what = "java.library.path " + p;
                if (!Files.isRegularFile(p)) {
                    tried.add(what + ": no such file");
                    continue;
                }
                Loaded l = tryOpen(p, what, tried);
                if (l != null) {
                    return l;
                }
            }
        }
        return null;
    }

    /**
     * Where the bundled library's bytes go: {@code <root>/hspmn-<user>/libhspmn-<sha256 prefix>.so}, written
     * once (to a temporary name, then renamed) and reused by every later JVM whose jar holds the same bytes;
     * an existing file is used only if its bytes are exactly these. The folder must be the user's own and
     * private (0700, not a link): the library is code this JVM runs, so nobody else may be able to plant or
     * swap it. Where that cannot be had (another owner, a non-POSIX file system), a fresh temporary file is
     * used instead and deleted when the JVM exits. Copies of other builds stay in the folder (one per build).
     */
    static Path extract(byte[] bytes, Path root) throws IOException {
        String hash = sha256(bytes).substring(0, 16);
        String user = System.getProperty("user.name", "user").replaceAll("[^A-Za-z0-9._-]", "_");
        Path dir = root.resolve("hspmn-" + user);
        if (privateFolder(dir)) {
            Path lib = dir.resolve("libhspmn-" + hash + ".so");
            if (Files.isRegularFile(lib, LinkOption.NOFOLLOW_LINKS) && Files.size(lib) == bytes.length
                    && Arrays.equals(Files.readAllBytes(lib), bytes)) {
                return lib;
            }
            Path tmp = Files.createTempFile(dir, ".libhspmn-" + hash + ".", ".tmp");
            try {
                Files.write(tmp, bytes);
                Files.move(tmp, lib, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } finally {
                Files.deleteIfExists(tmp);
            }
            return lib;
        }
        Path tmp = Files.createTempFile("libhspmn-", ".so");
        tmp.toFile().deleteOnExit();
        Files.write(tmp, bytes);
        return tmp;
    }

    private static final Set<PosixFilePermission> OWNER_ONLY = PosixFilePermissions.fromString("rwx------");

    /** Makes {@code dir} (0700) if missing; true when it is a real folder owned by this user that only they can use. */
    private static boolean privateFolder(Path dir) {
        try {
            if (!Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
                try {
                    Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(OWNER_ONLY));
                } catch (FileAlreadyExistsException raced) {
                    // another JVM made it first: checked below like any existing folder
                }
            }
            if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
                return false;
            }
            return ownedByMe(dir) && Files.getPosixFilePermissions(dir, LinkOption.NOFOLLOW_LINKS).equals(OWNER_ONLY);
        } catch (IOException | UnsupportedOperationException e) {
            return false;
        }
    }

    /** By uid where the platform tells it (/proc/self is owned by this process's uid), else by user name. */
    private static boolean ownedByMe(Path p) throws IOException {
        try {
            Object mine = Files.getAttribute(Path.of("/proc/self"), "unix:uid");
            return mine.equals(Files.getAttribute(p, "unix:uid", LinkOption.NOFOLLOW_LINKS));
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return Files.getOwner(p, LinkOption.NOFOLLOW_LINKS).getName().equals(System.getProperty("user.name"));
        }
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK has no SHA-256", e);
        }
    }

    private static Loaded tryOpen(Path p, String what, List<String> tried) {
        SymbolLookup lookup;
        try {
            // Arena.global(): the library stays mapped for the life of the JVM, as System.load would keep it.
            lookup = SymbolLookup.libraryLookup(p, Arena.global());
        } catch (RuntimeException e) {
            tried.add(what + ": dlopen failed: " + e.getMessage());
            return null;
        }
        var abi = lookup.find("hspmn_abi_version");
        if (abi.isEmpty()) {
            tried.add(what + ": loaded, but exports no hspmn_abi_version (not libhspmn?)");
            return null;
        }
        int version;
        try {
            MethodHandle mh = Linker.nativeLinker().downcallHandle(abi.get(), FunctionDescriptor.of(ValueLayout.JAVA_INT));
            version = (int) mh.invokeExact();
        } catch (Throwable t) {
            tried.add(what + ": calling hspmn_abi_version failed: " + t);
            return null;
        }
        if (version != expectedAbiVersion()) {
            tried.add(what + ": ABI version " + version + ", but these bindings were generated for "
                    + expectedAbiVersion() + " (rebuild the library and the jar from the same commit)");
            return null;
        }
        return new Loaded(p, lookup, what);
    }

    /** A view of {@code size} bytes at {@code address} whose lifetime is {@code arena}'s. */
    static MemorySegment view(MemorySegment address, long size, Arena arena) {
        return address.reinterpret(size, arena, null);
    }
}

package io.hspmn;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LibraryLoaderTest {

    @Test
    void failureListsEveryPathTried(@TempDir Path dir) throws IOException {
        Path missing = dir.resolve("nope/libhspmn.so");
        Path notALibrary = Files.writeString(dir.resolve(System.mapLibraryName("hspmn")), "not an ELF file");
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class,
                () -> NativeLibrary.load(missing.toString(), "/no/such/resource/libhspmn.so", dir + java.io.File.pathSeparator + "/no/such/dir"));
        String m = e.getMessage();
        assertTrue(m.contains(missing.toString()) && m.contains("no such file"), m);
        assertTrue(m.contains("/no/such/resource/libhspmn.so") && m.contains("not on the class path"), m);
        assertTrue(m.contains(notALibrary.toString()) && m.contains("dlopen failed"), m);
        assertTrue(m.contains("/no/such/dir/" + System.mapLibraryName("hspmn")), m);
        assertTrue(m.contains("--enable-native-access=ALL-UNNAMED"), m);
        assertTrue(m.contains("-Dhspmn.library.path"), m);
    }

    @Test
    void unsetPropertyIsReported() {
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, () -> NativeLibrary.load(null, null, ""));
        assertTrue(e.getMessage().contains("not set"), e.getMessage());
        assertTrue(e.getMessage().contains("java.library.path: empty"), e.getMessage());
    }

    @Test
    void aLibraryWithoutTheAbiFunctionIsRefused() {
        // libc is a valid shared library that is not ours
        Path libc = Path.of("/lib/x86_64-linux-gnu/libc.so.6");
        Assumptions.assumeTrue(Files.isRegularFile(libc), "no " + libc + " on this machine");
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, () -> NativeLibrary.load(libc.toString(), null, null));
        assertTrue(e.getMessage().contains("hspmn_abi_version"), e.getMessage());
    }

    /** A library from another ABI version is refused by name and version, not called into. */
    @Test
    void abiMismatchIsRefused(@TempDir Path dir) throws Exception {
        Path src = Files.writeString(dir.resolve("fake.c"), "int hspmn_abi_version(void) { return 99; }\n");
        Path so = dir.resolve("libhspmn.so");
        Process cc;
        try {
            cc = new ProcessBuilder("cc", "-shared", "-fPIC", "-Wl,-z,noexecstack", "-o", so.toString(), src.toString())
                    .redirectErrorStream(true).start();
        } catch (IOException e) {
            Assumptions.abort("no C compiler (cc) to build a fake library: " + e.getMessage());
            return;
        }
        String log = new String(cc.getInputStream().readAllBytes());
        Assumptions.assumeTrue(cc.waitFor() == 0, "cc failed: " + log);
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, () -> NativeLibrary.load(so.toString(), null, null));
        assertTrue(e.getMessage().contains("ABI version 99") && e.getMessage().contains("generated for "
                + NativeLibrary.expectedAbiVersion()), e.getMessage());
    }

    @Test
    void explicitPathLoads() {
        String p = System.getProperty(NativeLibrary.PATH_PROPERTY);
        Assumptions.assumeTrue(p != null && Files.isRegularFile(Path.of(p)), "hspmn.library.path not set to a built library");
        NativeLibrary.Loaded l = NativeLibrary.load(p, null, null);
        assertTrue(l.lookup().find("hspmn_block_forward").isPresent());
        assertTrue(l.source().contains(p), l.source());
    }

    @Test
    void bundledCopyLoads() {
        Assumptions.assumeTrue(NativeLibrary.class.getResource(NativeLibrary.BUNDLED_RESOURCE) != null,
                "no bundled library on the class path (built with -Dhspmn.skipNative=true?)");
        NativeLibrary.Loaded l = NativeLibrary.load(null, NativeLibrary.BUNDLED_RESOURCE, null);
        assertTrue(l.source().startsWith("bundled resource"), l.source());
        assertTrue(l.lookup().find("hspmn_abi_version").isPresent());
        // a second load (another JVM start) finds the copy already extracted instead of making one more
        NativeLibrary.Loaded again = NativeLibrary.load(null, NativeLibrary.BUNDLED_RESOURCE, null);
        assertEquals(l.source(), again.source());
    }

    /**
     * Issue 11: every JVM start extracted a new copy of the 6.8 MB library into the temporary folder and never
     * removed it. Now one copy per content hash, reused, rewritten when it does not hold the same bytes.
     */
    @Test
    void theBundledLibraryIsExtractedOncePerContent(@TempDir Path root) throws IOException {
        byte[] a = "library bytes, build A".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        byte[] b = "library bytes, build B".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        Path first = NativeLibrary.extract(a, root);
        for (int i = 0; i < 5; i++) {
            assertEquals(first, NativeLibrary.extract(a, root));
        }
        assertTrue(first.startsWith(root), first.toString());
        Path dir = first.getParent();
        assertEquals("rwx------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(dir)));
        try (var files = Files.list(dir)) {
            assertEquals(List.of(first), files.toList());
        }
        Path other = NativeLibrary.extract(b, root);
        assertNotEquals(first, other);
        Files.write(first, "tampered".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertEquals(first, NativeLibrary.extract(a, root));
        assertArrayEquals(a, Files.readAllBytes(first));
        try (var files = Files.list(dir)) {
            assertEquals(2, files.count()); // one per build, no temporary files left
        }
    }

    /** A folder others can write to is not trusted with code: a temporary copy, deleted at exit, instead. */
    @Test
    void aSharedExtractionFolderIsNotUsed(@TempDir Path root) throws IOException {
        String user = System.getProperty("user.name", "user").replaceAll("[^A-Za-z0-9._-]", "_");
        Path dir = Files.createDirectory(root.resolve("hspmn-" + user));
        Files.setPosixFilePermissions(dir, java.nio.file.attribute.PosixFilePermissions.fromString("rwxrwxrwx"));
        byte[] a = "library bytes".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        Path p = NativeLibrary.extract(a, root);
        assertFalse(p.startsWith(dir), p.toString());
        assertArrayEquals(a, Files.readAllBytes(p));
        Files.delete(p);
    }

    @Test
    void javaLibraryPathLoads() {
        String p = System.getProperty(NativeLibrary.PATH_PROPERTY);
        Assumptions.assumeTrue(p != null && Files.isRegularFile(Path.of(p)), "hspmn.library.path not set to a built library");
        NativeLibrary.Loaded l = NativeLibrary.load(null, null, "/no/such/dir" + java.io.File.pathSeparator + Path.of(p).getParent());
        assertTrue(l.source().startsWith("java.library.path"), l.source());
    }

    @Test
    void loadedLibraryHasTheBindingsAbi() {
        assertEquals(NativeLibrary.expectedAbiVersion(), Hspmn.abiVersion());
        assertTrue(!Hspmn.version().isEmpty());
        assertTrue(Hspmn.backendBuilt(Backend.CPU));
        for (Status s : Status.values()) {
            String n = Hspmn.statusName(s);
            assertTrue(n.toUpperCase(java.util.Locale.ROOT).contains(s.name().replace("_", "")) 
                    || n.toUpperCase(java.util.Locale.ROOT).replace(" ", "_").contains(s.name()), s + " is called '" + n + "' by the library");
        }
    }
}

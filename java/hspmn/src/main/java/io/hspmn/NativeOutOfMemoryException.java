package io.hspmn;

/** The library could not allocate host or device memory (status OUT_OF_MEMORY). */
public class NativeOutOfMemoryException extends HspmnException {
    public NativeOutOfMemoryException(String message, String nativeMessage) {
        super(Status.OUT_OF_MEMORY, message, nativeMessage);
    }
}

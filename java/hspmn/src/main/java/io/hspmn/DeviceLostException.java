package io.hspmn;

/**
 * The context's CUDA device hit a sticky error (illegal address, launch failure, device assert,
 * uncorrectable ECC...), in this library or in other code of the process sharing its CUDA context
 * (status DEVICE_LOST). Every later call on any context of that device fails with it, naming the
 * original error; nothing more can run there in this process: close the objects and restart it.
 */
public class DeviceLostException extends HspmnException {
    public DeviceLostException(String message, String nativeMessage) {
        super(Status.DEVICE_LOST, message, nativeMessage);
    }
}

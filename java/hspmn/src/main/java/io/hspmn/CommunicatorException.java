package io.hspmn;

/**
 * A collective of a {@link Communicator} failed (status COMM): the communicator was aborted (by
 * {@link Communicator#abort()} on any rank, typically because another rank failed), a peer did not
 * arrive within the timeout, or the transport (NCCL) reported an error. The communicator is unusable
 * afterwards: every later collective fails the same way; close it and the models it serves.
 */
public class CommunicatorException extends HspmnException {
    public CommunicatorException(String message, String nativeMessage) {
        super(Status.COMM, message, nativeMessage);
    }
}

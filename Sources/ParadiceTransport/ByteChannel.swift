/// A connected, ordered, reliable byte stream under the frame layer: a socket, or a shared-memory ring.
/// `FrameSocket` makes frames of it and serializes its use: sends never overlap, `close` comes once and
/// after every send, receives come from one thread at a time. `shutdown` may come at any time, from any
/// thread.
public protocol ByteChannel: AnyObject, Sendable {
    /// Sends some of `bytes` (at least one), blocking while the peer can take none.
    func send(_ bytes: UnsafeRawBufferPointer) throws(TransportError) -> Int

    /// Sends every byte of `bytes` with `descriptor` attached, for a peer on this machine. A channel that
    /// cannot carry descriptors throws `.system(_, .operationNotSupported)`.
    func send(_ bytes: UnsafeRawBufferPointer, passing descriptor: Int32) throws(TransportError)

    /// Receives up to `buffer.count` bytes, blocking until at least one came; 0 at the end of the stream.
    /// After `setReceiveTimeout`, a wait that long throws `.system(_, .resourceTemporarilyUnavailable)`.
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int

    /// Bounds each wait of `receive` (0: no bound).
    func setReceiveTimeout(seconds: Int)

    /// No more bytes follow: the peer receives what was sent, then the end of the stream.
    func finishSending()

    /// Ends the stream both ways and wakes a thread blocked in `send` or `receive`. The channel's
    /// resources stay until `close`.
    func shutdown()

    /// Releases the channel's resources (the peer sees the end of the stream once nothing else holds them).
    func close()

    /// The socket under the channel, for socket options and descriptor passing; nil for a channel that has none.
    var descriptor: Int32? { get }
}

import ParadiceTransport

/// `--echo`: answers every frame with itself. The benchmark's baseline: the same transport and framing
/// as the engine, with no engine behind it.
enum EchoServer {
    static func run(_ listeners: [Listener]) -> Never {
        for listener in listeners {
            startDetached {
                while let socket = try? listener.accept() {
                    startDetached {
                        while let frame = try? socket.receive() {
                            if (try? socket.send(frame)) == nil { break }
                        }
                        socket.close()
                    }
                }
            }
        }
        while true { pause() }
    }
}

#if canImport(Glibc)
import Glibc
#endif

func startDetached(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    pthread_create(&thread, nil, { raw in
        (Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box).body()
        return nil
    }, box)
    pthread_detach(thread)
}

import ParadiceTransport

/// `--echo`: answers every frame with itself. The benchmark's baseline: the same transport and framing
/// as the engine, with no engine behind it.
enum EchoServer {
    static func run(_ listeners: [Listener]) -> Never {
        for listener in listeners {
            startThread {
                while let socket = try? listener.accept() {
                    startThread {
                        guard (try? socket.establish(timeoutSeconds: 10)) != nil else { socket.close(); return }
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
import ParadiceEngine

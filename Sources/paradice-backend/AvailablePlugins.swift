import KVMPlugin
import V4L2Plugin
import ParadiceEngine

/// The plug-ins built into this backend; `--plugins` enables them by name.
enum AvailablePlugins {
    static let all: [any DevicePlugin.Type] = [KVMPlugin.self, V4L2Plugin.self]
}

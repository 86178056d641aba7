import ALSAPlugin
import DRMPlugin
import EvdevPlugin
import KVMPlugin
import ParadiceEngine
import V4L2Plugin

/// The plug-ins built into this backend; `--plugins` enables them by name.
enum AvailablePlugins {
    static let all: [any DevicePlugin.Type] = [ALSAPlugin.self, DRMPlugin.self, EvdevPlugin.self, KVMPlugin.self, V4L2Plugin.self]
}

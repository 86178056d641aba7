/* Passes a descriptor inside an ioctl's argument N times (KVM_IRQFD on a VM, its fd field naming the VM's own
 * descriptor): the frontend must translate it, and the program must see its own number afterwards.
 * Prints "kept N" when every call left the field as the program wrote it. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("open /dev/kvm"); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) { perror("KVM_CREATE_VM"); return 1; }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        struct kvm_irqfd irqfd;
        memset(&irqfd, 0, sizeof irqfd);
        irqfd.fd = (unsigned)vm;   /* not an eventfd: the driver refuses it, after the frontend translated it */
        irqfd.gsi = (unsigned)i;
        (void)ioctl(vm, KVM_IRQFD, &irqfd);
        if (irqfd.fd == (unsigned)vm) kept++;
    }
    printf("kept %d\n", kept);
    return 0;
}

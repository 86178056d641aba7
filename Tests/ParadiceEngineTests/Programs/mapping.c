/* A shared mapping of a forwarded device: KVM's kvm_run page of a vcpu. Setting immediate_exit through
 * the mapping makes KVM_RUN return EINTR at once: proof that the program and the kernel see one page. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("open"); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    int vcpu = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm < 0 || vcpu < 0 || size <= 0) { perror("kvm setup"); return 2; }
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) { perror("mmap"); return 3; }
    run->immediate_exit = 1;
    int r = ioctl(vcpu, KVM_RUN, 0);
    printf("KVM_RUN %d %s, mapping of %d bytes\n", r, r < 0 && errno == EINTR ? "EINTR" : "other", size);
    munmap(run, (size_t)size);
    return r < 0 && errno == EINTR ? 0 : 4;
}

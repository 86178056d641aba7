/* The conformance sequence (ConformanceTests.swift does the same through the Swift client): file
 * operations and ioctls on a pty pair, and on /dev/kvm when given, one line per operation: its name, its
 * result, its errno, and the bytes it returned. Run natively and under `paradice run`, the lines must be
 * the same. Usage: conformance [kvm] */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void line(const char *name, long result, const void *bytes, size_t n) {
    printf("%s %ld %d", name, result < 0 ? -1L : result, result < 0 ? errno : 0);
    if (n) printf(" ");
    for (size_t i = 0; i < n; i++) printf("%02x", ((const uint8_t *)bytes)[i]);
    printf("\n");
}

static long io(int fd, unsigned long command, void *argument) { return ioctl(fd, command, argument); }

int main(int argc, char **argv) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    line("open-ptmx", master < 0 ? -1 : 0, NULL, 0);
    if (master < 0) return 1;
    int zero = 0;
    line("TIOCSPTLCK", io(master, 0x40045431, &zero), NULL, 0);
    unsigned int n = 0;
    line("TIOCGPTN", io(master, 0x80045430, &n) < 0 ? -1 : 0, NULL, 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/pts/%u", n);
    int slave = open(path, O_RDWR | O_NOCTTY);
    line("open-slave", slave < 0 ? -1 : 0, NULL, 0);
    if (slave < 0) return 1;
    unsigned short ws[4] = { 40, 100, 0, 0 };
    line("TIOCSWINSZ", io(master, 0x5414, ws), NULL, 0);
    unsigned short got[4] = { 0 };
    line("TIOCGWINSZ", io(slave, 0x5413, got), got, sizeof got);
    uint8_t termios[36] = { 0 };
    line("TCGETS", io(slave, 0x5401, termios), termios, sizeof termios);
    line("TIOCGWINSZ-bad-pointer", io(slave, 0x5413, (void *)16), NULL, 0);
    line("unknown-ioctl", io(master, 0x54ff, NULL), NULL, 0);
    int queued = -1;
    line("FIONREAD", io(master, 0x541b, &queued), &queued, sizeof queued);
    line("write-slave", write(slave, "ping\n", 5), NULL, 0);
    struct pollfd p = { master, POLLIN, 0 };
    line("poll-master", poll(&p, 1, 10000), NULL, 0);
    char buffer[64];
    long r = read(master, buffer, sizeof buffer);
    line("read-master", r, buffer, r > 0 ? (size_t)r : 0);
    line("lseek-master", lseek(master, 0, SEEK_SET), NULL, 0);
    line("close-slave", close(slave), NULL, 0);
    line("close-master", close(master), NULL, 0);
    if (argc > 1 && strcmp(argv[1], "kvm") == 0) {
        int kvm = open("/dev/kvm", O_RDWR);
        line("open-kvm", kvm < 0 ? -1 : 0, NULL, 0);
        if (kvm < 0) return 1;
        line("KVM_GET_API_VERSION", io(kvm, 0xae00, NULL), NULL, 0);
        for (long capability = 0; capability < 16; capability++) {
            char name[32];
            snprintf(name, sizeof name, "KVM_CHECK_EXTENSION-%ld", capability);
            line(name, ioctl(kvm, 0xae03, capability), NULL, 0);
        }
        line("KVM_GET_VCPU_MMAP_SIZE", io(kvm, 0xae04, NULL), NULL, 0);
        /* One entry's room for many: E2BIG, and the count written back. */
        uint8_t cpuid[8 + 40] = { 1 };
        line("KVM_GET_SUPPORTED_CPUID-small", io(kvm, 0xc008ae05, cpuid), cpuid, 8);
        long vm = ioctl(kvm, 0xae01, 0);
        line("KVM_CREATE_VM", vm < 0 ? -1 : 0, NULL, 0);
        if (vm >= 0) {
            /* A vcpu's kvm_run, mapped: immediate_exit set through the mapping makes KVM_RUN return EINTR,
               which it does only when the device saw the store (a mirror: at the plug-in's sync point). */
            long vcpu = ioctl((int)vm, 0xae41, 0);
            line("KVM_CREATE_VCPU", vcpu < 0 ? -1 : 0, NULL, 0);
            long size = ioctl(kvm, 0xae04, 0);
            uint8_t *run = vcpu < 0 ? MAP_FAILED : mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, (int)vcpu, 0);
            line("mmap-vcpu", run == MAP_FAILED ? -1 : 0, NULL, 0);
            if (run != MAP_FAILED) {
                run[1] = 1;   /* kvm_run.immediate_exit */
                line("KVM_RUN", ioctl((int)vcpu, 0xae80, 0), run, 2);
                line("munmap-vcpu", munmap(run, (size_t)size), NULL, 0);
            }
            if (vcpu >= 0) line("close-vcpu", close((int)vcpu), NULL, 0);
            line("close-vm", close((int)vm), NULL, 0);
        }
        line("close-kvm", close(kvm), NULL, 0);
    }
    return 0;
}

/* A force-feedback device made with uinput, serving its effect requests: `uinputff SECONDS`.
 *
 * It creates "Paradice FF pad" (rumble and periodic effects, 4 slots), prints its sysfs name, then for
 * SECONDS answers what programs on its evdev node ask: an upload (EVIOCSFF) or erase (EVIOCRMFF) arrives
 * as an EV_UINPUT event, fetched with UI_BEGIN_FF_UPLOAD / UI_BEGIN_FF_ERASE and answered with
 * UI_END_FF_UPLOAD / UI_END_FF_ERASE; a play arrives as an EV_FF event. Each is printed on one line.
 * Once every uploaded effect is erased again (the kernel erases a program's effects when it closes
 * the node), the device is destroyed and the program ends. */
#include <fcntl.h>
#include <linux/uinput.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static void describe(const char *what, const struct ff_effect *e) {
    printf(" %s type %#x id %d", what, e->type, e->id);
    if (e->type == FF_RUMBLE) printf(" rumble %u/%u", e->u.rumble.strong_magnitude, e->u.rumble.weak_magnitude);
    if (e->type == FF_PERIODIC)
        printf(" periodic waveform %#x period %u magnitude %d custom_len %u", e->u.periodic.waveform, e->u.periodic.period,
               e->u.periodic.magnitude, e->u.periodic.custom_len);
    printf(" length %u", e->replay.length);
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 60;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fd = open("/dev/uinput", O_RDWR);
    if (fd < 0) { perror("/dev/uinput"); return 1; }
    unsigned version = 0;
    if (ioctl(fd, UI_GET_VERSION, &version) != 0 || version < 5) { printf("UI_GET_VERSION: %u\n", version); return 1; }
    int bits[][2] = { { UI_SET_EVBIT, EV_FF }, { UI_SET_EVBIT, EV_KEY }, { UI_SET_KEYBIT, BTN_SOUTH },
                      { UI_SET_FFBIT, FF_RUMBLE }, { UI_SET_FFBIT, FF_PERIODIC }, { UI_SET_FFBIT, FF_SINE },
                      { UI_SET_FFBIT, FF_GAIN } };
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
        if (ioctl(fd, (unsigned long)bits[i][0], bits[i][1]) != 0) { perror("UI_SET_*BIT"); return 1; }
    struct uinput_setup setup = { .id = { BUS_USB, 0x1209, 0x5046, 1 }, .ff_effects_max = 4 };
    strcpy(setup.name, "Paradice FF pad");
    if (ioctl(fd, UI_DEV_SETUP, &setup) != 0 || ioctl(fd, UI_DEV_CREATE) != 0) { perror("UI_DEV_SETUP/CREATE"); return 1; }
    char sysname[64];
    if (ioctl(fd, UI_GET_SYSNAME(sizeof sysname), sysname) < 0) { perror("UI_GET_SYSNAME"); return 1; }
    printf("created %s\n", sysname);

    time_t end = time(NULL) + seconds;
    unsigned live = 0, uploads = 0;   /* effect ids uploaded and not erased */
    while (time(NULL) < end && !(uploads && !live)) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 1000) <= 0) continue;
        struct input_event ev;
        if (read(fd, &ev, sizeof ev) != sizeof ev) { perror("read"); return 1; }
        if (ev.type == EV_UINPUT && ev.code == UI_FF_UPLOAD) {
            struct uinput_ff_upload upload;
            memset(&upload, 0, sizeof upload);
            upload.request_id = (unsigned)ev.value;
            if (ioctl(fd, UI_BEGIN_FF_UPLOAD, &upload) != 0) { perror("UI_BEGIN_FF_UPLOAD"); return 1; }
            printf("upload:");
            describe("effect", &upload.effect);
            describe("old", &upload.old);
            printf("\n");
            upload.retval = upload.effect.id >= 0 && upload.effect.id < 32 ? 0 : -22;
            if (upload.retval == 0) { live |= 1u << upload.effect.id; uploads++; }
            if (ioctl(fd, UI_END_FF_UPLOAD, &upload) != 0) { perror("UI_END_FF_UPLOAD"); return 1; }
        } else if (ev.type == EV_UINPUT && ev.code == UI_FF_ERASE) {
            struct uinput_ff_erase erase = { .request_id = (unsigned)ev.value };
            if (ioctl(fd, UI_BEGIN_FF_ERASE, &erase) != 0) { perror("UI_BEGIN_FF_ERASE"); return 1; }
            printf("erase: effect %u\n", erase.effect_id);
            erase.retval = 0;
            if (erase.effect_id < 32) live &= ~(1u << erase.effect_id);
            if (ioctl(fd, UI_END_FF_ERASE, &erase) != 0) { perror("UI_END_FF_ERASE"); return 1; }
        } else if (ev.type == EV_FF) {
            printf("play: effect %u value %d\n", ev.code, ev.value);
        }
    }
    ioctl(fd, UI_DEV_DESTROY);
    printf("destroyed\n");
    return 0;
}

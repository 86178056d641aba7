/* Raw PCM calls, printed with their result and errno: the same lines natively and through Paradice.
 * Transfers before HW_PARAMS and after HW_FREE (the file has no frame size then), a transfer from an
 * unmapped buffer (on a driver that copies the data: snd-dummy's fake buffer never reads it), and a
 * command the class does not know. */
#include <errno.h>
#include <fcntl.h>
#include <sound/asound.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void report(const char *what, int r) { printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : "ok"); }

static void set_interval(struct snd_pcm_hw_params *p, int which, unsigned v) {
    struct snd_interval *i = &p->intervals[which - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
    i->min = i->max = v;
    i->integer = 1;
}

int main(int argc, char **argv) {
    int fd = open(argc > 1 ? argv[1] : "/dev/snd/pcmC1D0p", O_RDWR | O_NONBLOCK);
    if (fd < 0) { perror("open"); return 1; }
    char frames[64] = { 0 };
    struct snd_xferi x = { .buf = frames, .frames = 4 };
    report("WRITEI before HW_PARAMS", ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x));
    report("READI before HW_PARAMS", ioctl(fd, SNDRV_PCM_IOCTL_READI_FRAMES, &x));

    struct snd_pcm_hw_params p;
    memset(&p, 0, sizeof p);
    for (int m = 0; m <= SNDRV_PCM_HW_PARAM_LAST_MASK; m++) memset(&p.masks[m], 0xff, sizeof p.masks[m]);
    for (int i = SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; i <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL; i++)
        p.intervals[i - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL].max = ~0u;
    memset(&p.masks[SNDRV_PCM_HW_PARAM_ACCESS], 0, sizeof p.masks[0]);
    p.masks[SNDRV_PCM_HW_PARAM_ACCESS].bits[0] = 1u << SNDRV_PCM_ACCESS_RW_INTERLEAVED;
    memset(&p.masks[SNDRV_PCM_HW_PARAM_FORMAT], 0, sizeof p.masks[0]);
    p.masks[SNDRV_PCM_HW_PARAM_FORMAT].bits[0] = 1u << SNDRV_PCM_FORMAT_S16_LE;
    set_interval(&p, SNDRV_PCM_HW_PARAM_CHANNELS, 2);
    set_interval(&p, SNDRV_PCM_HW_PARAM_RATE, 48000);
    set_interval(&p, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, 1024);
    set_interval(&p, SNDRV_PCM_HW_PARAM_PERIODS, 4);
    p.rmask = ~0u;
    report("HW_PARAMS", ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &p));
    report("PREPARE", ioctl(fd, SNDRV_PCM_IOCTL_PREPARE));
    x.frames = 16;   /* 64 bytes of S16 stereo: exactly the buffer */
    x.result = 0;
    int r = ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x);
    report("WRITEI 16 frames", r);
    printf("result %ld\n", (long)x.result);
    x.buf = (void *)16;   /* unmapped */
    report("WRITEI from an unmapped buffer", ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x));
    report("unknown command", ioctl(fd, _IO('A', 0xfe)));
    report("DROP", ioctl(fd, SNDRV_PCM_IOCTL_DROP));
    report("HW_FREE", ioctl(fd, SNDRV_PCM_IOCTL_HW_FREE));
    x.buf = frames;
    report("WRITEI after HW_FREE", ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x));
    close(fd);
    return 0;
}

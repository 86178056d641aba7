/* ALSA period wake-up latency: a playback client that sleeps in poll() until a period is free, then asks
 * the driver how far the device has gone. With avail_min one period and whole periods written, avail
 * reaches one period exactly at a period boundary, so (avail - period) when the woken client's call
 * reaches the driver is how late the wake-up was, counted in device frames: the device's own clock, so
 * the same figure whether the client runs beside the driver or through Paradice on another machine.
 *
 *   alsa-wakeup [DEVICE [PERIODS [PERIOD_FRAMES]]]    default hw:Dummy,0,0 200 1024
 * Prints one line: key=value figures, latencies in microseconds. */
#include <alsa/asoundlib.h>
#include <stdio.h>
#include <stdlib.h>

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call) do { int e_ = (call); if (e_ < 0) { fprintf(stderr, "%s: %s\n", #call, snd_strerror(e_)); return 1; } } while (0)

int main(int argc, char **argv) {
    const char *device = argc > 1 ? argv[1] : "hw:Dummy,0,0";
    int periods = argc > 2 ? atoi(argv[2]) : 200;
    snd_pcm_uframes_t period = argc > 3 ? strtoul(argv[3], NULL, 0) : 1024, buffer = 4 * period;
    unsigned int rate = 48000;
    snd_pcm_t *pcm;
    CHECK(snd_pcm_open(&pcm, device, SND_PCM_STREAM_PLAYBACK, 0));
    snd_pcm_hw_params_t *hw;
    snd_pcm_hw_params_alloca(&hw);
    CHECK(snd_pcm_hw_params_any(pcm, hw));
    CHECK(snd_pcm_hw_params_set_access(pcm, hw, SND_PCM_ACCESS_RW_INTERLEAVED));
    CHECK(snd_pcm_hw_params_set_format(pcm, hw, SND_PCM_FORMAT_S16_LE));
    CHECK(snd_pcm_hw_params_set_channels(pcm, hw, 2));
    CHECK(snd_pcm_hw_params_set_rate_near(pcm, hw, &rate, NULL));
    CHECK(snd_pcm_hw_params_set_period_size_near(pcm, hw, &period, NULL));
    CHECK(snd_pcm_hw_params_set_buffer_size_near(pcm, hw, &buffer));
    CHECK(snd_pcm_hw_params(pcm, hw));
    snd_pcm_sw_params_t *sw;
    snd_pcm_sw_params_alloca(&sw);
    CHECK(snd_pcm_sw_params_current(pcm, sw));
    CHECK(snd_pcm_sw_params_set_avail_min(pcm, sw, period));
    CHECK(snd_pcm_sw_params_set_start_threshold(pcm, sw, buffer));
    CHECK(snd_pcm_sw_params(pcm, sw));

    short *silence = calloc(period * 2, sizeof *silence);
    double *late = calloc(periods, sizeof *late);
    int n = 0, xruns = 0;
    for (snd_pcm_uframes_t f = 0; f < buffer; f += period) snd_pcm_writei(pcm, silence, period);   /* starts it */
    while (n < periods) {
        if (snd_pcm_wait(pcm, 1000) < 0) { xruns++; snd_pcm_prepare(pcm); continue; }
        snd_pcm_sframes_t avail = snd_pcm_avail(pcm);
        if (avail < 0) { xruns++; snd_pcm_prepare(pcm); continue; }
        late[n++] = (double)(avail - (snd_pcm_sframes_t)period) * 1e6 / rate;
        if (snd_pcm_writei(pcm, silence, period) < 0) { xruns++; snd_pcm_prepare(pcm); }
    }
    snd_pcm_drop(pcm);
    snd_pcm_close(pcm);
    qsort(late, n, sizeof *late, ascending);
    printf("device=%s rate=%u period_frames=%lu period_us=%.0f wakeups=%d median_us=%.0f p90_us=%.0f max_us=%.0f xruns=%d\n",
           device, rate, period, period * 1e6 / rate, n, late[n / 2], late[n * 9 / 10], late[n - 1], xruns);
    return 0;
}

/* Device identification the way v4l-utils and libdrm do it: stat the node, follow its sysfs link,
 * list the device directory, read uevent. Prints everything, so that a native run can be compared. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    struct stat st;
    if (stat(argv[1], &st) != 0) { perror("stat"); return 1; }
    char path[256], link[512];
    snprintf(path, sizeof path, "/sys/dev/char/%u:%u", major(st.st_rdev), minor(st.st_rdev));
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) { perror("readlink"); return 2; }
    link[n] = 0;
    printf("link %s\n", link);
    char dir[1024];
    snprintf(dir, sizeof dir, "/sys/dev/char/%s", link);
    DIR *d = opendir(dir);
    if (!d) { perror("opendir"); return 3; }
    char *names[256];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < 256) names[count++] = strdup(e->d_name);
    closedir(d);
    qsort(names, count, sizeof *names, by_name);
    for (int i = 0; i < count; i++) printf("entry %s\n", names[i]);
    char uevent[1100];
    snprintf(uevent, sizeof uevent, "%s/uevent", path);
    FILE *f = fopen(uevent, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) printf("uevent %s", line);
    if (f) fclose(f);
    int w = open(uevent, O_WRONLY);
    printf("write open: %s\n", w < 0 ? strerror(errno) : "allowed");
    return 0;
}

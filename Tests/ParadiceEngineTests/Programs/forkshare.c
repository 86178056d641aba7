/* Files across fork, as descriptors: the child keeps what it inherited whatever its parent does after the
 * fork. `close`: the parent closes its copy of a pty master and the child then uses its own. `exit`: the
 * parent exits, and then the child uses the master. `after`: a master the parent opens after the fork is
 * not the child's: once the parent closes it, its slave sees the hangup at once, though the child has
 * used its inherited file meanwhile. Prints the same natively and forwarded. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int pty_number(int master) {
    int number = -1;
    return ioctl(master, TIOCGPTN, &number) == 0 ? number : -errno;
}

static int open_master(void) {
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    int unlock = 0;
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) != 0) { perror("ptmx"); exit(1); }
    return master;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int master = open_master();
    int number = pty_number(master);
    int go[2];
    if (pipe(go) != 0) return 1;
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        close(go[1]);
        char c;
        /* close, after: one byte from the parent; exit: end of file once the parent is gone */
        (void)read(go[0], &c, 1);
        int seen = pty_number(master);
        printf("child: the inherited master is pty %s\n", seen == number ? "the parent's" : seen < 0 ? strerror(-seen) : "another");
        fflush(stdout);
        if (strcmp(argv[1], "after") == 0 && read(go[0], &c, 1) != 1) _exit(1);   /* until the parent's check */
        _exit(0);
    }
    close(go[0]);
    if (strcmp(argv[1], "close") == 0) {
        close(master);
        if (write(go[1], "g", 1) != 1) return 1;
        waitpid(child, NULL, 0);
        printf("parent: closed its copy first\n");
    } else if (strcmp(argv[1], "exit") == 0) {
        printf("parent: exits first\n");
        fflush(stdout);
        return 0;   /* the pipe's write end closes with it: the child goes on */
    } else if (strcmp(argv[1], "after") == 0) {
        int later = open_master();
        int later_number = pty_number(later);
        char path[64];
        snprintf(path, sizeof path, "/dev/pts/%d", later_number);
        int slave = open(path, O_RDWR | O_NOCTTY);
        if (slave < 0) { perror("slave"); return 1; }
        if (write(go[1], "g", 1) != 1) return 1;
        usleep(300000);   /* the child has used its inherited master (and connected) by now */
        close(later);
        struct pollfd p = { slave, POLLIN, 0 };
        int polled = poll(&p, 1, 3000);
        printf("parent: the slave of a master opened after the fork, once that closes: %s\n",
               polled == 1 && (p.revents & POLLHUP) ? "hung up" : "still open");
        if (write(go[1], "g", 1) != 1) return 1;
        waitpid(child, NULL, 0);
    } else {
        return 2;
    }
    return 0;
}

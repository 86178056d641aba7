// SPDX-License-Identifier: GPL-2.0
/*
 * compat-ioctl.c — a 32-bit caller for abi-test's compat_ioctl check, without a C library (the host may
 * have no 32-bit one): gcc -m32 -static -nostdlib -ffreestanding -fno-pic -fno-stack-protector.
 * Opens argv[1], issues one ioctl whose 8-byte argument the daemon reads (1..8) and rewrites (byte 0 = 9);
 * exits with the ioctl's result when the rewrite arrived, 50 when not, 100 + errno when a call failed.
 */
static long sys3(long n, long a, long b, long c)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

static void __attribute__((noreturn)) sys_exit(long code)
{
	sys3(1, code, 0, 0);
	for (;;)
		;
}

void __attribute__((noreturn, used)) pdk_main(long *sp)
{
	unsigned char buf[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	const char *path = (const char *)sp[2];   /* argc, argv[0], argv[1] */
	long fd, r;

	fd = sys3(5, (long)path, 2 /* O_RDWR */, 0);
	if (fd < 0)
		sys_exit(100 - fd);
	r = sys3(54, fd, 0xc0087a01 /* _IOWR('z', 1, 8 bytes) */, (long)buf);
	if (r < 0)
		sys_exit(100 - r);
	sys3(6, fd, 0, 0);   /* close */
	sys_exit(buf[0] == 9 ? r : 50);
}

__asm__(".globl _start\n_start:\n\tmovl %esp, %eax\n\tandl $-16, %esp\n\tsubl $12, %esp\n\tpushl %eax\n\tcall pdk_main\n");

#ifndef PARADICE_FUZZ_DRIVER_H
#define PARADICE_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's driver (compiler-rt, linked by -sanitize=fuzzer). SwiftPM names an executable's entry point
   <module>_main and makes it `main`, so a Swift harness starts libFuzzer itself from there. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif

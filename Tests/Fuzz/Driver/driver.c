/* Declarations only (include/fuzz_driver.h): libFuzzer defines them. */
#include "fuzz_driver.h"

/*
 * test_sim_line: meter-sim's RTU line arithmetic (tools/meter-sim/fault.h), which the
 * line-speed emulation and the RTU cycle benchmark rest on.
 *
 * Expected values worked out by hand: one character is bits_per_char / baud seconds;
 * 9600 baud 8N1 is 10 bits, 1041.67 us a character; 8E1 and 8N2 are 11 bits, 1145.83 us.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include "fault.h"

static void test_bits_per_char(void **state)
{
    (void)state;
    assert_i64_eq(line_bits_per_char('N', 1), 10);
    assert_i64_eq(line_bits_per_char('E', 1), 11);
    assert_i64_eq(line_bits_per_char('O', 1), 11);
    assert_i64_eq(line_bits_per_char('N', 2), 11);
    assert_i64_eq(line_bits_per_char('E', 2), 12);
}

static void test_reply_time(void **state)
{
    (void)state;
    /* FC 4, 40 registers: 8 + 85 characters + 3.5 silence = 96.5 chars at 10 bits, 9600:
     * 965 / 9600 s = 100520.83 us, rounded up. */
    assert_i64_eq(line_reply_us(9600, 10, 8, 85), 100521);
    /* 8E1 at 19200: 96.5 * 11 / 19200 s = 55286.46 us. */
    assert_i64_eq(line_reply_us(19200, 11, 8, 85), 55287);
    /* FC 4, 2 registers (reply 9 bytes): 20.5 chars, 21354.17 us. */
    assert_i64_eq(line_reply_us(9600, 10, 8, 9), 21355);
    assert_i64_eq(line_reply_us(0, 10, 8, 9), 0);
}

static void test_silence(void **state)
{
    (void)state;
    /* 3.5 characters: 35 bits / 9600 = 3645.83 us; 38.5 bits = 4010.42 us. */
    assert_i64_eq(line_silence_us(9600, 10), 3646);
    assert_i64_eq(line_silence_us(9600, 11), 4011);
    assert_i64_eq(line_silence_us(115200, 10), 304);
    assert_i64_eq(line_silence_us(0, 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bits_per_char),
        cmocka_unit_test(test_reply_time),
        cmocka_unit_test(test_silence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * board_priv: what the board_*.c files share and nobody else sees: the board structure as
 * board_parse() fills it, and the current system-call table. Not installed, not included
 * outside board/.
 */
#ifndef MLK_BOARD_PRIV_H
#define MLK_BOARD_PRIV_H

#include "board.h"

#include <pthread.h>

#define BOARD_MAX_SERIAL 16
#define BOARD_PATH_MAX 256
#define BOARD_LED_NAME_MAX 128
#define BOARD_PREFIX_MAX 32 /* identity prefix: up to 31 characters */

enum board_wdt_type { BOARD_WDT_NONE, BOARD_WDT_HARDWARE, BOARD_WDT_SYSTEMD };
enum board_id_source { BOARD_ID_CONFIG, BOARD_ID_FIXED, BOARD_ID_MACHINE_ID, BOARD_ID_FILE };

struct board_port {
    char device[BOARD_PATH_MAX];
    struct board_rs485 rs;
};

struct board {
    char name[BOARD_ID_MAX];

    int nserial;
    struct board_port serial[BOARD_MAX_SERIAL];
    struct board_rs485 rs485_default;

    enum board_wdt_type wdt_type;
    char wdt_device[BOARD_PATH_MAX];
    int wdt_timeout_s; /* asked for in the board file */
    /* run-time watchdog state (board_watchdog.c) */
    int wdt_fd;      /* hardware: the open device, else -1 */
    int wdt_started; /* board_watchdog_start() succeeded */
    long wdt_interval_ms;

    char led_root[BOARD_PATH_MAX];
    bool led_create; /* create missing directories and files (simulated sysfs) */
    char led_names[BOARD_LED_COUNT][BOARD_LED_NAME_MAX]; /* "" = the board has no such LED */
    /* run-time LED state (board_led.c), under led_lock */
    pthread_mutex_t led_lock;
    int led_state[BOARD_LED_COUNT];    /* last state set, -1 = unknown */
    int led_no_flash[BOARD_LED_COUNT]; /* negative errno of a failed oneshot trigger, or 0 */

    enum board_id_source id_source;
    char id_fixed[BOARD_ID_MAX];
    char id_path[BOARD_PATH_MAX];
    char id_prefix[BOARD_PREFIX_MAX];

    bool reboot_system; /* false: "reboot": "none" */
};

/* The system-call table in use (board_set_ops). */
extern const struct board_ops *board_cur_ops;

#endif

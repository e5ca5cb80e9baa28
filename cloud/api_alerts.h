/*
 * api_alerts: the alert endpoints of the HTTP API (api_alerts.c; routed by api.c).
 */
#ifndef MLK_CLOUD_API_ALERTS_H
#define MLK_CLOUD_API_ALERTS_H

#include "alerts.h"

/* The alerts the endpoints serve; a must outlive the server. Call before api_start().
 * NULL (the default) answers 503 there. */
void api_alerts_setup(alerts_t *a);

#endif

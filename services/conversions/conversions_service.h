/*
 * conversions_service.h -- the conversions methods, registered on any
 * natomic service (the binary, the tests and the benchmark share them).
 */
#ifndef CONVERSIONS_SERVICE_H
#define CONVERSIONS_SERVICE_H

#include <natomic.h>

#include "conversions_store.h"

/* Adds conversions.inches_to_cm (and the lab's test methods inches_to_cm_batch and forget) to `svc`,
 * saving into `store` (borrowed). */
natomic_status_t conversions_service_register(natomic_service_t *svc, conversions_store_t *store);

#endif

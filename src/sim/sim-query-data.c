/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Owns the records behind the data queries. Record ROW of an object is a pure function of
 * (object, ROW): every field is drawn from splitmix64 of the row index and a per-field salt,
 * so a 50-million-row answer needs no table and two equal requests give equal bytes. Names
 * include an apostrophe, a comma and a double quote, and exit comments a comma and a line
 * break, so the CSV and JSON writers are exercised on every default-sized answer. Never
 * allocates or logs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"
#include "sim-model-data.h"
#include "sim-query-data.h"

const QDataMetric qdata_metrics[] = {
        { "employeeCount", "Headcount", "Employee", QDATA_METRIC_HEADCOUNT },
        { "resignationRate", "Resignation Rate", "Employee", QDATA_METRIC_RESIGNATION_RATE },
        { "exitCount", "Exits", "Employee_Exit", QDATA_METRIC_EVENTS },
        { "applicantCount", "Applicants", "Applicant", QDATA_METRIC_EVENTS },
        { "requisitionCount", "Requisitions", "Requisition", QDATA_METRIC_HEADCOUNT },
};
const size_t qdata_metrics_n = ELEMENTSOF(qdata_metrics);

typedef enum ValueKind {
        VALUE_ID,               /* prefix + 6+ digit row number */
        VALUE_NAME,
        VALUE_JOB,
        VALUE_PAY_LEVEL,
        VALUE_BIRTH_DATE,
        VALUE_NO_DATA,
        VALUE_DAY,              /* the record's own date (qdata_day) */
        VALUE_START_TYPE,
        VALUE_COMMENT,
        VALUE_AMOUNT,
        VALUE_REQUISITION_REF,
        _VALUE_KIND_MAX,
} ValueKind;

/* One row per seed property, in the order of seed_properties (qdata_check() verifies it). */
static const struct {
        const char *id;
        ValueKind kind;
        char prefix;
} value_table[] = {
        { "Employee.EmployeeID", VALUE_ID, 'E' },
        { "Employee.Full_Name", VALUE_NAME, 0 },
        { "Employee.Job_Name", VALUE_JOB, 0 },
        { "Employee.Pay_Level", VALUE_PAY_LEVEL, 0 },
        { "Employee.Birth_Date", VALUE_BIRTH_DATE, 0 },
        { "Employee.Performance_Rating", VALUE_NO_DATA, 0 },
        { "Requisition.RequisitionID", VALUE_ID, 'R' },
        { "Requisition.Job_Title", VALUE_JOB, 0 },
        { "Requisition.Open_Date", VALUE_DAY, 0 },
        { "Requisition.Hiring_Manager", VALUE_NAME, 0 },
        { "Applicant.ApplicantID", VALUE_ID, 'A' },
        { "Applicant.Full_Name", VALUE_NAME, 0 },
        { "Applicant.Application_Date", VALUE_DAY, 0 },
        { "Applicant.Requisition", VALUE_REQUISITION_REF, 'R' },
        { "Employment_Start.EventDate", VALUE_DAY, 0 },
        { "Employment_Start.Start_Type", VALUE_START_TYPE, 0 },
        { "Employee_Exit.EventDate", VALUE_DAY, 0 },
        { "Employee_Exit.Exit_Reason_Comment", VALUE_COMMENT, 0 },
        { "Compensation_Change.EventDate", VALUE_DAY, 0 },
        { "Compensation_Change.Change_Amount", VALUE_AMOUNT, 0 },
};

static const char *const first_names[] = {
        "Olivia", "Liam", "Amelia", "Noah", "Priya", "Wei", "Sofia", "Mateo", "Aisha", "Lucas",
        "Chloe", "Hiroshi", "Fatima", "Ethan", "Ingrid", "Robert \"Bob\"",
};
static const char *const last_names[] = {
        "Smith", "Nguyen", "Garcia", "Chen", "O'Brien", "Patel", "Kowalski", "Martin",
        "Tremblay", "Singh", "Smith, Jr.", "Rossi", "Dubois", "Kim", "Okafor", "Larsen",
};
static const char *const jobs[] = {
        "Software Engineer", "Senior Software Engineer", "Account Executive", "HR Business Partner",
        "Data Analyst", "Product Manager", "Recruiter", "Engineering Manager",
};
static const char *const pay_levels[] = { "Low", "Medium", "High" };
static const char *const start_types[] = { "New Hire", "Rehire", "Acquisition" };
static const char *const comments[] = {
        "Better offer elsewhere",
        "Relocating, closer to family",
        "Said \"time for a change\"",
        "Career change;\nreturning to school",
        "Retirement",
};

/* Salts keep the fields of one record independent of each other. */
enum {
        SALT_NAME_FIRST = 1,
        SALT_NAME_LAST,
        SALT_JOB,
        SALT_PAY,
        SALT_BIRTH,
        SALT_DAY,
        SALT_START_TYPE,
        SALT_COMMENT,
        SALT_AMOUNT,
        SALT_REF,
        SALT_EXIT,
        SALT_EXIT_DAY,
        SALT_VOLUNTARY,
        SALT_DIMENSION = 64,    /* + dimension index */
};

static uint64_t mix(uint64_t object, uint64_t row, uint64_t salt) {
        uint64_t z = row * UINT64_C(0x9e3779b97f4a7c15) + (object << 40) + (salt << 20) + UINT64_C(0x632be59bd9b4e019);

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static size_t strv_len(const char *const *v) {
        size_t n = 0;

        while (v && v[n])
                n++;
        return n;
}

int qdata_check(void) {
        if (seed_properties_n != ELEMENTSOF(value_table))
                return -EBADMSG;
        for (size_t i = 0; i < seed_properties_n; i++)
                if (!streq(seed_properties[i].id, value_table[i].id))
                        return -EBADMSG;
        if (seed_dimensions_n > QDATA_DIMENSIONS_MAX)
                return -E2BIG;
        for (size_t i = 0; i < seed_dimensions_n; i++)
                if (strv_len(seed_dimensions[i].members) > QDATA_MEMBERS_MAX)
                        return -E2BIG;
        return 0;
}

int qdata_object(const char *id) {
        for (size_t i = 0; i < seed_objects_n; i++)
                if (streq(seed_objects[i].id, id))
                        return (int) i;
        return -ENOENT;
}

int qdata_metric(const char *id) {
        for (size_t i = 0; i < qdata_metrics_n; i++)
                if (streq(qdata_metrics[i].id, id))
                        return (int) i;
        return -ENOENT;
}

int qdata_property(size_t object, const char *full_id) {
        const char *o = seed_objects[object].id;
        size_t n = strlen(o);

        for (size_t i = 0; i < seed_properties_n; i++)
                if (streq(seed_properties[i].id, full_id))
                        return strncmp(full_id, o, n) == 0 && full_id[n] == '.' ? (int) i : -ENXIO;
        return -ENOENT;
}

int qdata_dimension(size_t object, const char *id) {
        for (size_t i = 0; i < seed_dimensions_n; i++) {
                if (!streq(seed_dimensions[i].id, id))
                        continue;
                for (const char *const *d = seed_objects[object].dimensions; d && *d; d++)
                        if (streq(*d, id))
                                return (int) i;
                return -ENXIO;
        }
        return -ENOENT;
}

size_t qdata_members_n(size_t dim) {
        return strv_len(seed_dimensions[dim].members);
}

const char *qdata_member_path(size_t dim, size_t member) {
        return seed_dimensions[dim].members[member];
}

int qdata_member(size_t dim, const char *path) {
        for (size_t i = 0; i < qdata_members_n(dim); i++)
                if (streq(qdata_member_path(dim, i), path))
                        return (int) i;
        return -ENOENT;
}

unsigned qdata_member_depth(size_t dim, size_t member) {
        unsigned depth = 1;

        for (const char *p = qdata_member_path(dim, member); *p; p++)
                depth += *p == '/';
        return depth;
}

bool qdata_member_under(size_t dim, size_t member, size_t ancestor) {
        const char *m = qdata_member_path(dim, member), *a = qdata_member_path(dim, ancestor);
        size_t n = strlen(a);

        return strncmp(m, a, n) == 0 && (m[n] == '\0' || m[n] == '/');
}

bool qdata_member_is_leaf(size_t dim, size_t member) {
        for (size_t i = 0; i < qdata_members_n(dim); i++)
                if (i != member && qdata_member_under(dim, i, member))
                        return false;
        return true;
}

unsigned qdata_levels_n(size_t dim) {
        unsigned n = 0;

        while (n < ELEMENTSOF(seed_dimensions[dim].level_ids) && seed_dimensions[dim].level_ids[n])
                n++;
        return n;
}

int qdata_level(size_t dim, const char *id) {
        const SeedDimension *d = &seed_dimensions[dim];

        for (unsigned i = 0; i < qdata_levels_n(dim); i++) {
                const char *dot = strchr(d->level_ids[i], '.');

                if (streq(d->level_ids[i], id) || streq(d->level_names[i], id) || (dot && streq(dot + 1, id)))
                        return (int) i + 1;
        }
        return -ENOENT;
}

size_t qdata_leaves(size_t dim, size_t *ret, size_t max) {
        size_t n = 0;

        for (size_t i = 0; i < qdata_members_n(dim) && n < max; i++)
                if (qdata_member_is_leaf(dim, i))
                        ret[n++] = i;
        return n;
}

size_t qdata_leaf_pick(size_t object, size_t dim, uint64_t row, size_t n_leaves) {
        return n_leaves > 0 ? (size_t) (mix(object, row, SALT_DIMENSION + dim) % n_leaves) : 0;
}

/* ---- calendar -------------------------------------------------------------------------- */

/* Howard Hinnant's days_from_civil / civil_from_days. */
int64_t qdata_days_from_civil(int64_t y, unsigned m, unsigned d) {
        int64_t era, yoe, doy, doe;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = y - era * 400;
        doy = (153 * (int64_t) (m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t) d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

void qdata_civil_from_days(int64_t z, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d) {
        int64_t era, doe, yoe, y, doy, mp;

        z += 719468;
        era = (z >= 0 ? z : z - 146096) / 146097;
        doe = z - era * 146097;
        yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        y = yoe + era * 400;
        doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        mp = (5 * doy + 2) / 153;
        *ret_d = (unsigned) (doy - (153 * mp + 2) / 5 + 1);
        *ret_m = (unsigned) (mp < 10 ? mp + 3 : mp - 9);
        *ret_y = y + (*ret_m <= 2);
}

void qdata_format_iso(int64_t day, char *buf, size_t size) {
        int64_t y;
        unsigned m, d;

        qdata_civil_from_days(day, &y, &m, &d);
        snprintf(buf, size, "%04" PRId64 "-%02u-%02uT00:00:00.000Z", y, m, d);
}

void qdata_format_date(int64_t day, bool datetime, char *buf, size_t size) {
        int64_t y;
        unsigned m, d;

        if (!datetime) {
                snprintf(buf, size, "%" PRId64, day * INT64_C(86400000));
                return;
        }
        qdata_civil_from_days(day, &y, &m, &d);
        snprintf(buf, size, "%04" PRId64 "-%02u-%02u 00:00:00+0000", y, m, d);
}

/* ---- records --------------------------------------------------------------------------- */

int64_t qdata_day(size_t object, uint64_t row) {
        /* Subjects start before the last month so every one is counted somewhere. */
        return QDATA_DAY_FIRST + (int64_t) (mix(object, row, SALT_DAY) % (uint64_t) (QDATA_DAY_END - QDATA_DAY_FIRST - 31));
}

bool qdata_employee_exit(uint64_t row, int64_t *ret_day, bool *ret_voluntary) {
        size_t object = (size_t) qdata_object("Employee");
        int64_t day;

        if (mix(object, row, SALT_EXIT) % 100 >= 35)
                return false;
        day = qdata_day(object, row) + 30 + (int64_t) (mix(object, row, SALT_EXIT_DAY) % 1500);
        if (day >= QDATA_DAY_END)
                return false;
        *ret_day = day;
        *ret_voluntary = mix(object, row, SALT_VOLUNTARY) % 100 < 70;
        return true;
}

void qdata_value(size_t object, size_t prop, uint64_t row, bool datetime, char *buf, size_t size) {
        uint64_t o = object;

        buf[0] = '\0';
        if (prop >= ELEMENTSOF(value_table))
                return;
        {
                size_t i = prop;

                switch (value_table[i].kind) {
                case VALUE_ID:
                        snprintf(buf, size, "%c%06" PRIu64, value_table[i].prefix, row + 1);
                        break;
                case VALUE_NAME:
                        snprintf(buf, size, "%s %s",
                                 first_names[mix(o, row, SALT_NAME_FIRST) % ELEMENTSOF(first_names)],
                                 last_names[mix(o, row, SALT_NAME_LAST) % ELEMENTSOF(last_names)]);
                        break;
                case VALUE_JOB:
                        snprintf(buf, size, "%s", jobs[mix(o, row, SALT_JOB) % ELEMENTSOF(jobs)]);
                        break;
                case VALUE_PAY_LEVEL:
                        snprintf(buf, size, "%s", pay_levels[mix(o, row, SALT_PAY) % ELEMENTSOF(pay_levels)]);
                        break;
                case VALUE_BIRTH_DATE:
                        /* Born 1960-01-01 .. 2001-12-31. */
                        qdata_format_date(qdata_days_from_civil(1960, 1, 1) +
                                                  (int64_t) (mix(o, row, SALT_BIRTH) % 15340),
                                          datetime, buf, size);
                        break;
                case VALUE_NO_DATA:
                        break;
                case VALUE_DAY:
                        qdata_format_date(qdata_day(o, row), datetime, buf, size);
                        break;
                case VALUE_START_TYPE:
                        snprintf(buf, size, "%s", start_types[mix(o, row, SALT_START_TYPE) % ELEMENTSOF(start_types)]);
                        break;
                case VALUE_COMMENT:
                        snprintf(buf, size, "%s", comments[mix(o, row, SALT_COMMENT) % ELEMENTSOF(comments)]);
                        break;
                case VALUE_AMOUNT: {
                        uint64_t cents = 50000 + mix(o, row, SALT_AMOUNT) % 1500000;
                        snprintf(buf, size, "%" PRIu64 ".%02" PRIu64, cents / 100, cents % 100);
                        break;
                }
                case VALUE_REQUISITION_REF:
                        snprintf(buf, size, "%c%06" PRIu64, value_table[i].prefix, mix(o, row, SALT_REF) % 5000 + 1);
                        break;
                default:
                        break;
                }
        }
}

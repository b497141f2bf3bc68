/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Seed data of the simulated tenant: a small HR data model (Employee, Requisition, Applicant
 * and three events) with realistic dimensions and members. Constant; never changed at run
 * time. Capabilities and content packages are built in sim-model.c, permissions in
 * sim-permissions.c.
 */
#include <string.h>

#include "sim-model-data.h"

#define ELEMS(x) (sizeof(x) / sizeof((x)[0]))

const SeedProperty seed_properties[] = {
        { "Employee.EmployeeID", "Employee ID", true, NULL, false },
        { "Employee.Full_Name", "Full Name", false, NULL, false },
        { "Employee.Job_Name", "Job Name", false, NULL, false },
        { "Employee.Pay_Level", "Job Pay Level", false, NULL, false },
        { "Employee.Birth_Date", "Birth Date", false, NULL, false },
        { "Employee.Performance_Rating", "Performance Rating", false, NULL, true },
        { "Requisition.RequisitionID", "Requisition ID", true, NULL, false },
        { "Requisition.Job_Title", "Job Title", false, NULL, false },
        { "Requisition.Open_Date", "Open Date", false, NULL, false },
        { "Requisition.Hiring_Manager", "Hiring Manager", false, NULL, false },
        { "Applicant.ApplicantID", "Applicant ID", true, NULL, false },
        { "Applicant.Full_Name", "Full Name", false, NULL, false },
        { "Applicant.Application_Date", "Application Date", false, NULL, false },
        { "Applicant.Requisition", "Requisition", false, "Applicant.Requisition", false },
        { "Employment_Start.EventDate", "Event Date", false, NULL, false },
        { "Employment_Start.Start_Type", "Start Type", false, NULL, false },
        { "Employee_Exit.EventDate", "Event Date", false, NULL, false },
        { "Employee_Exit.Exit_Reason_Comment", "Exit Reason Comment", false, NULL, false },
        { "Compensation_Change.EventDate", "Event Date", false, NULL, false },
        { "Compensation_Change.Change_Amount", "Change Amount", false, NULL, false },
};
const size_t seed_properties_n = ELEMS(seed_properties);

static const char *const location_members[] = {
        "Canada",
        "Canada/British Columbia",
        "Canada/British Columbia/Vancouver",
        "Canada/British Columbia/Victoria",
        "Canada/Ontario",
        "Canada/Ontario/Toronto",
        "Canada/Ontario/Ottawa",
        "USA",
        "USA/California",
        "USA/California/San Francisco",
        "USA/California/Los Angeles",
        "USA/New York",
        "USA/New York/New York City",
        "United Kingdom",
        "United Kingdom/England",
        "United Kingdom/England/London",
        NULL
};
static const char *const gender_members[] = { "Female", "Male", "Other", NULL };
static const char *const org_members[] = {
        "Acme Corp",
        "Acme Corp/Engineering",
        "Acme Corp/Engineering/Platform",
        "Acme Corp/Engineering/Product Development",
        "Acme Corp/Sales",
        "Acme Corp/Sales/North America Sales",
        "Acme Corp/Human Resources",
        NULL
};
static const char *const employment_type_members[] = { "Full-time", "Part-time", "Contractor", NULL };
static const char *const requisition_status_members[] = { "Open", "Filled", "Cancelled", NULL };
static const char *const applicant_source_members[] = { "Career Site", "Referral", "Job Board", "Agency", NULL };
static const char *const exit_type_members[] = { "Voluntary", "Involuntary", NULL };
static const char *const change_reason_members[] = { "Merit", "Promotion", "Market Adjustment", NULL };

static const SeedHierarchyProperty org_hierarchy_properties[] = {
        { "Organization_Hierarchy.Name_Property", "Name Property" },
        { "Organization_Hierarchy.Organization_Head", "Organization Head" },
        { NULL, NULL }
};

const SeedDimension seed_dimensions[] = {
        { "Location", "Location", "The geographic location of the work site.",
          "Location groups members by country, province or state, and city.",
          { "Location.Country", "Location.Province", "Location.City" }, { "Country", "Province", "City" },
          location_members, NULL, "Core", "Core" },
        { "Gender", "Gender", "The gender of the person.",
          "Gender as recorded in the HRIS.",
          { "Gender.Gender" }, { "Gender" },
          gender_members, NULL, "Diversity", "Diversity" },
        { "Organization_Hierarchy", "Organization Hierarchy", "The supervisory organization structure.",
          "A parent-child hierarchy built from each employee's manager.",
          { "Organization_Hierarchy.Level_1", "Organization_Hierarchy.Level_2", "Organization_Hierarchy.Level_3" },
          { "Level 1", "Level 2", "Level 3" },
          org_members, org_hierarchy_properties, "Core", "Core" },
        { "Employment_Type", "Employment Type", "Whether the employee works full-time, part-time or on contract.",
          "Employment type of the employment record.",
          { "Employment_Type.Employment_Type" }, { "Employment Type" },
          employment_type_members, NULL, NULL, NULL },
        { "Requisition_Status", "Requisition Status", "The current state of the requisition.",
          "Open, filled or cancelled.",
          { "Requisition_Status.Status" }, { "Status" },
          requisition_status_members, NULL, NULL, NULL },
        { "Applicant_Source", "Applicant Source", "Where the applicant came from.",
          "The recruiting channel of the application.",
          { "Applicant_Source.Source" }, { "Source" },
          applicant_source_members, NULL, NULL, NULL },
        { "Exit_Type", "Exit Type", "Whether the exit was voluntary or involuntary.",
          "Exit type of the termination event.",
          { "Exit_Type.Exit_Type" }, { "Exit Type" },
          exit_type_members, NULL, NULL, NULL },
        { "Compensation_Change_Reason", "Compensation Change Reason", "Why the compensation changed.",
          "The reason recorded with the compensation change.",
          { "Compensation_Change_Reason.Reason" }, { "Reason" },
          change_reason_members, NULL, NULL, NULL },
};
const size_t seed_dimensions_n = ELEMS(seed_dimensions);

static const char *const employee_dims[] = { "Location", "Gender", "Organization_Hierarchy", "Employment_Type", NULL };
static const char *const requisition_dims[] = { "Location", "Organization_Hierarchy", "Requisition_Status", NULL };
static const char *const applicant_dims[] = { "Gender", "Applicant_Source", NULL };
static const char *const start_dims[] = { "Location", "Gender", "Organization_Hierarchy", NULL };
static const char *const exit_dims[] = { "Location", "Gender", "Exit_Type", NULL };
static const char *const comp_dims[] = { "Location", "Compensation_Change_Reason", NULL };
static const char *const employee_related[] = { "Employment_Start", "Employee_Exit", "Compensation_Change", NULL };
static const char *const none[] = { NULL };
static const char *const employee_concepts[] = { "Employee.isManager", "Employee.isHighPerformer", NULL };

const SeedObject seed_objects[] = {
        { "Employee", "Employee", "People employed by the organization.", "SUBJECT", "Subject", true,
          employee_dims, employee_related, employee_concepts },
        { "Requisition", "Requisition", "Approved requests to fill a position.", "SUBJECT", "Subject", true,
          requisition_dims, none, NULL },
        { "Applicant", "Applicant", "People who applied to a requisition.", "SUBJECT", "Subject", true,
          applicant_dims, none, NULL },
        { "Employment_Start", "Employment Start", "An employee joins the organization.", "EVENT", "Event", false,
          start_dims, none, NULL },
        { "Employee_Exit", "Employee Exit", "An employee leaves the organization.", "EVENT", "Event", false,
          exit_dims, none, NULL },
        { "Compensation_Change", "Compensation Change", "An employee's compensation changes.", "EVENT", "Event", false,
          comp_dims, none, NULL },
};
const size_t seed_objects_n = ELEMS(seed_objects);

const SeedObject *seed_object_find(const char *id) {
        for (size_t i = 0; id && i < seed_objects_n; i++)
                if (strcmp(seed_objects[i].id, id) == 0)
                        return &seed_objects[i];
        return NULL;
}

const SeedDimension *seed_dimension_find(const char *id) {
        for (size_t i = 0; id && i < seed_dimensions_n; i++)
                if (strcmp(seed_dimensions[i].id, id) == 0)
                        return &seed_dimensions[i];
        return NULL;
}

const SeedProperty *seed_property_find(const char *id) {
        for (size_t i = 0; id && i < seed_properties_n; i++)
                if (strcmp(seed_properties[i].id, id) == 0)
                        return &seed_properties[i];
        return NULL;
}

bool seed_object_has_dimension(const SeedObject *o, const char *dim) {
        for (const char *const *d = o ? o->dimensions : NULL; d && *d && dim; d++)
                if (strcmp(*d, dim) == 0)
                        return true;
        return false;
}

bool seed_dimension_has_member(const SeedDimension *d, const char *path) {
        for (const char *const *m = d ? d->members : NULL; m && *m && path; m++)
                if (strcmp(*m, path) == 0)
                        return true;
        return false;
}

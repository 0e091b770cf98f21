"""The OneRoster 1.1 bundle for GG4L School Passport / Student Support Tracker (seed 001, SPEC §3.3, §4.3).

`HEADERS`: each CSV file's columns, exactly and in this order (`metadata.*` columns go to their right);
the one home of the bundle's layout, read by the attribute mapping's checks (`mapping`) and by the marts.
"""

_HEADERS = """
orgs: sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId
academicSessions: sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear
courses: sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes
classes: sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods
users: sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password
enrollments: sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate
demographics: sourcedId,status,dateLastModified,birthDate,sex,americanIndianOrAlaskaNative,asian,blackOrAfricanAmerican,nativeHawaiianOrOtherPacificIslander,white,demographicRaceTwoOrMoreRaces,hispanicOrLatinoEthnicity,countryOfBirthCode,stateOfBirthAbbreviation,cityOfBirth,publicSchoolResidenceStatus
manifest: propertyName,value
"""  # noqa: E501 (one line per file, as the spec lists them)

HEADERS: dict[str, tuple[str, ...]] = {
    name: tuple(columns.strip().split(","))
    for name, columns in (line.split(":", 1) for line in _HEADERS.strip().splitlines())
}

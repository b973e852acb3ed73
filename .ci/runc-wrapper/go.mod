module airflowha.ci/runcwrapper

go 1.25.0

"""meddx in the hospital's own systems: DICOM Structured Reports (`sr`), the overlay as a Secondary
Capture (`overlay`), FHIR R4 DiagnosticReports (`fhir`), writing them as files (`files`), and a DICOMweb
round trip with a PACS (`dicomweb`); the UIDs meddx derives (`identity`).

Every writer works from an `meddx.result.Analysis`; the DICOM ones need ``Analysis.source`` (a DICOM film's
references and the header attributes an object in the same study must repeat), which never enters a
result, report or log. These are research outputs, not those of a cleared medical device.
"""

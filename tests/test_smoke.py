from tests.fhirclient import json_of, patient


def test_create_then_read(client):
    created = client.post("Patient", patient())
    assert created.status_code == 201
    pid = json_of(created)["id"]
    read = client.get(f"Patient/{pid}")
    assert read.status_code == 200
    assert json_of(read)["identifier"][0]["value"] == "1800175123456"
    assert read.headers["ETag"] == 'W/"1"'

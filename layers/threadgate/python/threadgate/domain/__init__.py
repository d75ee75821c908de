"""Pure domain logic: no boto3, httpx or sqlite imports. Functions take their ports as arguments."""
